// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The datapath as shipped, except that tf_socket_cookie (lib/enforce.bpf.h)
 * returns skb->mark: under BPF_PROG_TEST_RUN a packet's socket is a dummy
 * whose cookie nobody can predict, so each test case names its connection
 * through the mark of the test-run context.
 */
#define TF_COOKIE_FROM_MARK
#include "datapath.bpf.c"
