#!/usr/bin/env bash
# Validate the Kubernetes manifests under deploy/kubernetes/ offline against
# the Kubernetes API schema, strictly: an unknown (e.g. misspelled) field is
# an error, as are wrong types, missing required fields and bad enums.
#
#   scripts/validate-manifests.sh              validate deploy/kubernetes/
#   scripts/validate-manifests.sh FILE...      validate these manifest files
#   scripts/validate-manifests.sh --self-test  prove that injected typos fail
#
# What is checked:
#   - every file listed (resources, patches) by the kustomization.yaml files
#     under deploy/kubernetes/ (each is a root: overlays are alternatives),
#     and every YAML file there that no kustomization lists is reported;
#   - each document of each listed resource file (and, when kubectl is
#     installed, each document that `kubectl kustomize` renders for every
#     kustomization: that also checks the kustomizations and the patches);
#   - against two packages from the npm registry, installed once into
#     build/manifest-validator/ (or $TF_VALIDATOR_CACHE) and then used offline:
#       kubernetes-models    ajv validators generated from the Kubernetes
#                            OpenAPI spec: types, required fields, enums,
#                            formats (it accepts unknown fields);
#       @kubernetes/client-node  the official client's generated models
#                            (OpenAPI spec release-1.36): the complete field
#                            list of every API type, used to reject any field
#                            the API does not define (the "strict" part).
#     Only the client's tarball is fetched (`npm pack`, integrity checked),
#     not its runtime dependencies: its model files import nothing.
#   - YAML itself: syntax errors and duplicate keys.
# Errors print FILE:LINE: /json/pointer: message, and the exit code is 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFESTS="${TF_MANIFESTS_DIR:-${ROOT}/deploy/kubernetes}"
CACHE="${TF_VALIDATOR_CACHE:-${ROOT}/build/manifest-validator}"

# Pinned versions (bump deliberately; the client tarball's integrity too).
KUBERNETES_MODELS_VERSION=5.1.0
YAML_VERSION=2.9.1
CLIENT_NODE_VERSION=2.0.1
CLIENT_NODE_INTEGRITY="sha512-evJgmEtgArEYlj6DNkMGjK41IrFK/hEwb5lWVxx0VRBWybQpnvi+2TtA19mLgVfRHfqX5yjHObX6e9W7LEZBjw=="

die() { echo "validate-manifests: $*" >&2; exit 2; }

install_validator() {
  local stamp="kubernetes-models@${KUBERNETES_MODELS_VERSION} yaml@${YAML_VERSION} @kubernetes/client-node@${CLIENT_NODE_VERSION}"
  if [[ -f "${CACHE}/.installed" && "$(cat "${CACHE}/.installed")" == "${stamp}" ]]; then
    return
  fi
  command -v node >/dev/null || die "node is not installed (apt-get install nodejs npm)"
  command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"
  echo "validate-manifests: installing ${stamp} into ${CACHE} (once)" >&2
  rm -rf "${CACHE}"
  mkdir -p "${CACHE}/client-node"
  cat >"${CACHE}/package.json" <<EOF
{
  "name": "trustfence-manifest-validator",
  "private": true,
  "type": "module",
  "dependencies": {
    "kubernetes-models": "${KUBERNETES_MODELS_VERSION}",
    "yaml": "${YAML_VERSION}"
  }
}
EOF
  # kubernetes-models declares node >= 22 but works on Debian's node 20.
  (cd "${CACHE}" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
    --engine-strict=false >&2) || die "npm install failed"
  local packed
  packed="$(cd "${CACHE}" && npm pack --json --loglevel=error \
    "@kubernetes/client-node@${CLIENT_NODE_VERSION}")" || die "npm pack failed"
  local integrity
  integrity="$(node -e 'const p=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(p[0].integrity)' <<<"${packed}")"
  [[ "${integrity}" == "${CLIENT_NODE_INTEGRITY}" ]] ||
    die "@kubernetes/client-node@${CLIENT_NODE_VERSION}: integrity ${integrity}, expected ${CLIENT_NODE_INTEGRITY}"
  tar -xzf "${CACHE}/kubernetes-client-node-${CLIENT_NODE_VERSION}.tgz" -C "${CACHE}/client-node" \
    package/dist/gen/models package/package.json
  rm -f "${CACHE}/kubernetes-client-node-${CLIENT_NODE_VERSION}.tgz"
  write_validator
  echo "${stamp}" >"${CACHE}/.installed"
}

write_validator() {
  cat >"${CACHE}/validate.mjs" <<'EOF'
// Usage: node validate.mjs FILE... ; exit 0 valid, 1 invalid.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { LineCounter, parseAllDocuments, isMap, isSeq } from "yaml";

const here = path.dirname(new URL(import.meta.url).pathname);
const modelsDir = path.join(here, "client-node/package/dist/gen/models");
let failures = 0;

function report(file, line, pointer, message) {
  failures++;
  console.log(`${file}:${line}: ${pointer || "/"}: ${message}`);
}

// Line of a JSON pointer in a parsed document (nearest existing ancestor).
function lineOf(doc, lc, pointer) {
  const keys = pointer.split("/").slice(1).map((k) => k.replace(/~1/g, "/").replace(/~0/g, "~"));
  let node = doc.contents;
  let best = node;
  for (const key of keys) {
    if (isMap(node)) {
      const pair = node.items.find((p) => String(p.key?.value ?? p.key) === key);
      if (!pair) break;
      best = pair.key ?? pair.value;
      node = pair.value;
      if (node) best = best ?? node;
    } else if (isSeq(node)) {
      node = node.items[Number(key)];
      if (!node) break;
      best = node;
    } else break;
  }
  const offset = best?.range?.[0] ?? 0;
  return lc.linePos(offset).line;
}

const modelCache = new Map();
async function model(name) {
  if (!modelCache.has(name)) {
    const file = path.join(modelsDir, `${name}.js`);
    let cls = null;
    if (fs.existsSync(file)) cls = (await import(pathToFileURL(file)))[name] ?? null;
    modelCache.set(name, cls);
  }
  return modelCache.get(name);
}

function editDistance(a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                         d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

// Every key must be a field of its API type, recursively.
async function strict(value, type, pointer, problems) {
  if (value === null || value === undefined) return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (Array.isArray(value))
      for (const [i, item] of value.entries()) await strict(item, m[1], `${pointer}/${i}`, problems);
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (typeof value === "object" && !Array.isArray(value))
      for (const [k, v] of Object.entries(value))
        await strict(v, m[1], `${pointer}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`, problems);
    return;
  }
  const cls = await model(type);
  if (!cls || typeof value !== "object" || Array.isArray(value)) return;  // leaf, or a type error ajv reports
  const fields = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [key, v] of Object.entries(value)) {
    const escaped = key.replace(/~/g, "~0").replace(/\//g, "~1");
    if (!fields.has(key)) {
      const near = [...fields.keys()].map((f) => [editDistance(key.toLowerCase(), f.toLowerCase()), f])
        .sort((x, y) => x[0] - y[0])[0];
      const hint = near && near[0] <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean "${near[1]}"?)` : "";
      problems.push([`${pointer}/${escaped}`,
        `unknown field "${key}" in ${type}${hint}; known fields: ${[...fields.keys()].join(", ")}`]);
      continue;
    }
    await strict(v, fields.get(key), `${pointer}/${escaped}`, problems);
  }
}

function clientTypeNames(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const ver = version.charAt(0).toUpperCase() + version.slice(1);
  const first = group === "" ? "Core" : group.split(".")[0];
  const groupName = first.charAt(0).toUpperCase() + first.slice(1);
  return [`${ver}${kind}`, `${groupName}${ver}${kind}`];
}

async function validateDocument(file, doc, lc, index) {
  const where = (pointer) => lineOf(doc, lc, pointer);
  const obj = doc.toJS();
  if (obj === null || obj === undefined) return;  // empty document
  if (typeof obj !== "object" || Array.isArray(obj)) {
    report(file, where(""), "", `document ${index + 1} is not a Kubernetes object`);
    return;
  }
  const { apiVersion, kind } = obj;
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    report(file, where(""), "", `document ${index + 1} has no apiVersion/kind`);
    return;
  }
  // 1. The OpenAPI-generated validator: types, required, enums, formats.
  let Model;
  try {
    const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
    Model = mod[kind];
  } catch {
    report(file, where("/kind"), "/kind", `no Kubernetes API schema for ${apiVersion} ${kind}`);
    return;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    for (const err of e.errors ?? [{ instancePath: "", message: e.message }]) {
      let msg = err.message;
      if (err.params?.allowedValues) msg += `: ${err.params.allowedValues.join(", ")}`;
      if (err.params?.missingProperty) msg = `missing required field "${err.params.missingProperty}"`;
      report(file, where(err.instancePath), err.instancePath, `${msg} (${apiVersion} ${kind})`);
    }
  }
  // 2. Strict: no field the API does not define.
  let top = null;
  for (const name of clientTypeNames(apiVersion, kind)) if ((top = await model(name))) { top = name; break; }
  if (!top) {
    report(file, where("/kind"), "/kind", `no field list for ${apiVersion} ${kind} in the client models`);
    return;
  }
  const problems = [];
  await strict(obj, top, "", problems);
  for (const [pointer, msg] of problems) report(file, where(pointer), pointer, msg);
}

let documents = 0;
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file, "utf8");
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  for (const [i, doc] of docs.entries()) {
    const errs = doc.errors ?? [];
    if (errs.length) {
      for (const err of errs) report(file, lc.linePos(err.pos?.[0] ?? 0).line, "", `YAML: ${err.message.split("\n")[0]}`);
      continue;
    }
    documents++;
    await validateDocument(file, doc, lc, i);
  }
}
if (failures) {
  console.log(`FAIL: ${failures} error(s)`);
  process.exit(1);
}
console.log(`ok: ${documents} document(s) in ${process.argv.length - 2} file(s) valid`);
EOF
}

# Files listed by a kustomization (resources and patches), recursively.
# Prints one absolute path per line; directories are followed.
list_kustomization() {
  local dir="$1" k
  k="${dir}/kustomization.yaml"
  [[ -f "${k}" ]] || die "${dir}: no kustomization.yaml"
  echo "K ${k}"
  node --input-type=module -e '
    import fs from "node:fs";
    import { parse } from "'"${CACHE}"'/node_modules/yaml/dist/index.js";
    const k = parse(fs.readFileSync(process.argv[1], "utf8")) ?? {};
    for (const r of k.resources ?? []) console.log("R " + r);
    for (const p of k.patches ?? []) if (p.path) console.log("P " + p.path);
    for (const p of k.patchesStrategicMerge ?? []) console.log("P " + p);
  ' "${k}" | while read -r what rel; do
    local target="${dir}/${rel}"
    if [[ "${what}" == R && -d "${target}" ]]; then
      list_kustomization "$(cd "${target}" && pwd)"
    elif [[ -f "${target}" ]]; then
      echo "${what} $(cd "$(dirname "${target}")" && pwd)/$(basename "${target}")"
    else
      echo "MISSING ${k}: ${rel}"
    fi
  done
}

validate_tree() {
  local tree="$1" status=0
  # Every kustomization under the tree is a root (overlays are alternatives).
  local listing k
  listing="$(while IFS= read -r k; do list_kustomization "$(dirname "${k}")"; done \
    < <(find "${tree}" -name kustomization.yaml | sort) | sort -u)"
  if grep -q '^MISSING' <<<"${listing}"; then
    grep '^MISSING' <<<"${listing}" | sed 's/^MISSING /validate-manifests: listed but missing: /'
    status=1
  fi
  # Every YAML file under the tree must be used by some kustomization.
  local used
  used="$(awk '{print $2}' <<<"${listing}")"
  while IFS= read -r f; do
    grep -qxF "${f}" <<<"${used}" || { echo "${f}: not listed by any kustomization.yaml"; status=1; }
  done < <(find "${tree}" -name '*.yaml' -o -name '*.yml' | sort)
  mapfile -t resources < <(awk '$1 == "R" {print $2}' <<<"${listing}")
  echo "== resource files listed by the kustomizations (${#resources[@]})"
  node "${CACHE}/validate.mjs" "${resources[@]}" || status=1
  if command -v kubectl >/dev/null; then
    local tmp k dir out
    tmp="$(mktemp -d)"
    while read -r k; do
      dir="$(dirname "${k}")"
      out="${tmp}/rendered-$(realpath --relative-to="${MANIFESTS}" "${dir}" | tr / _ | sed "s/^\.$/top/").yaml"
      echo "== kubectl kustomize ${dir} (rendered to $(basename "${out}"))"
      if kubectl kustomize "${dir}" >"${out}" 2>"${tmp}/err"; then
        node "${CACHE}/validate.mjs" "${out}" || status=1
      else
        echo "${k}: kustomize failed: $(cat "${tmp}/err")"
        status=1
      fi
    done < <(awk '$1 == "K" {print $2}' <<<"${listing}")
    rm -rf "${tmp}"
  else
    echo "== kubectl not installed: rendered kustomizations not checked"
  fi
  return "${status}"
}

self_test() {
  local tmp status=0 out
  tmp="$(mktemp -d)"
  trap 'rm -rf "${tmp}"' RETURN
  local ds="${MANIFESTS}/base/daemonset.yaml"
  [[ -f "${ds}" ]] || die "self-test needs ${ds}"
  expect() {  # expect NAME valid|invalid PATTERN FILE
    local name="$1" want="$2" pattern="$3" file="$4" rc=0
    out="$(node "${CACHE}/validate.mjs" "${file}")" || rc=$?
    printf '    %s\n' "${out//$'\n'/$'\n'    }"
    local ok=false
    if [[ "${want}" == valid ]]; then
      [[ ${rc} -eq 0 ]] && ok=true
    elif [[ ${rc} -eq 1 ]] && grep -qF -- "${pattern}" <<<"${out}"; then
      ok=true
    fi
    if ${ok}; then
      echo "  PASS ${name}"
    else
      echo "  FAIL ${name} (exit ${rc}, wanted ${want}${pattern:+ mentioning ${pattern}})"
      status=1
    fi
  }
  echo "== self-test"
  cp "${ds}" "${tmp}/pristine.yaml"
  expect "the DaemonSet as it is" valid "" "${tmp}/pristine.yaml"
  sed 's/^      containers:$/      contianers:/' "${ds}" >"${tmp}/contianers.yaml"
  cmp -s "${ds}" "${tmp}/contianers.yaml" && die "self-test: could not inject contianers"
  expect "misspelled pod field contianers" invalid 'unknown field "contianers"' "${tmp}/contianers.yaml"
  sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesytem: true/' "${ds}" >"${tmp}/nested.yaml"
  cmp -s "${ds}" "${tmp}/nested.yaml" && die "self-test: could not inject readOnlyRootFilesytem"
  expect "misspelled nested securityContext field" invalid 'unknown field "readOnlyRootFilesytem"' "${tmp}/nested.yaml"
  sed 's/type: RollingUpdate/type: Rolling/' "${ds}" >"${tmp}/enum.yaml"
  cmp -s "${ds}" "${tmp}/enum.yaml" && die "self-test: could not inject type: Rolling"
  expect "bad updateStrategy enum" invalid 'allowed values' "${tmp}/enum.yaml"
  sed 's/^\( *\)periodSeconds: 10$/\1periodSeconds: ten/' "${ds}" >"${tmp}/type.yaml"
  cmp -s "${ds}" "${tmp}/type.yaml" && die "self-test: could not inject periodSeconds: ten"
  expect "string where an integer is needed" invalid 'must be integer' "${tmp}/type.yaml"
  { cat "${ds}"; echo "  selector: {}"; } >"${tmp}/dup.yaml"
  expect "duplicate key" invalid 'YAML:' "${tmp}/dup.yaml"
  [[ ${status} -eq 0 ]] && echo "self-test: all cases behaved" || echo "self-test: FAILED"
  return "${status}"
}

install_validator
write_validator  # keep the generated validator in step with this script

case "${1:-}" in
  --self-test) self_test ;;
  -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' ;;
  "") validate_tree "${MANIFESTS}" ;;
  *) node "${CACHE}/validate.mjs" "$@" ;;
esac
