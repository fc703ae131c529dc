# Builds kernel programs: vmlinux.h from the running kernel's BTF, a BPF
# object with clang -target bpf, and its bpftool skeleton.
#
#   trustfence_bpf_object(<name> <source.bpf.c>)
#
# makes <name>.bpf.o and <name>.skel.h in the build tree and an INTERFACE
# target <name>_skel that user code links to include the skeleton.

find_program(BPF_CLANG clang REQUIRED)
find_program(BPFTOOL bpftool PATHS /usr/sbin /sbin REQUIRED)
set(TF_VMLINUX_BTF "/sys/kernel/btf/vmlinux" CACHE FILEPATH
    "BTF of the kernel the programs are built against")

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|amd64")
  set(TF_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(TF_BPF_ARCH arm64)
else()
  set(TF_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

set(TF_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf)
file(MAKE_DIRECTORY ${TF_BPF_GEN_DIR})

add_custom_command(
  OUTPUT ${TF_BPF_GEN_DIR}/vmlinux.h
  COMMAND ${BPFTOOL} btf dump file ${TF_VMLINUX_BTF} format c > ${TF_BPF_GEN_DIR}/vmlinux.h.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${TF_BPF_GEN_DIR}/vmlinux.h.tmp ${TF_BPF_GEN_DIR}/vmlinux.h
  COMMENT "Generating vmlinux.h from ${TF_VMLINUX_BTF}"
  VERBATIM)
add_custom_target(tf_vmlinux_h DEPENDS ${TF_BPF_GEN_DIR}/vmlinux.h)

function(trustfence_bpf_object name source)
  set(obj ${TF_BPF_GEN_DIR}/${name}.bpf.o)
  set(skel ${TF_BPF_GEN_DIR}/${name}.skel.h)
  get_filename_component(src_abs ${source} ABSOLUTE)
  file(GLOB_RECURSE bpf_headers CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/bpf/*.bpf.h ${CMAKE_SOURCE_DIR}/include/trustfence/abi.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -target bpf -O2 -g -Wall -Werror
            -D__TARGET_ARCH_${TF_BPF_ARCH}
            -I${TF_BPF_GEN_DIR} -I${CMAKE_SOURCE_DIR}/include -I${CMAKE_SOURCE_DIR}/bpf
            -c ${src_abs} -o ${obj}
    DEPENDS ${src_abs} ${bpf_headers} ${TF_BPF_GEN_DIR}/vmlinux.h
    COMMENT "BPF ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  # vmlinux.h is made by a rule of the top directory: order on its target.
  add_dependencies(${name}_skel_gen tf_vmlinux_h)
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${TF_BPF_GEN_DIR})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
