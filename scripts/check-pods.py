"""Checks that every pod in the given Kubernetes manifests runs hardened and sized.

Schema validation (kubernetes-validate) accepts a pod without these; this script does
not: runAsNonRoot, seccomp RuntimeDefault, and for every container (init containers too)
readOnlyRootFilesystem, allowPrivilegeEscalation false, all capabilities dropped, and
memory and CPU requests and limits. Prints one line per problem; exits 1 if any.
"""

import sys

import yaml

POD_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc.get("spec") or {}
    elif kind in POD_TEMPLATES:
        yield ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        job = ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        yield (job.get("template") or {}).get("spec") or {}


def problems(spec):
    pod = spec.get("securityContext") or {}
    if pod.get("runAsNonRoot") is not True:
        yield "pod: securityContext.runAsNonRoot must be true"
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        yield "pod: securityContext.seccompProfile.type must be RuntimeDefault"
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        name = c.get("name", "?")
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            yield f"container {name}: readOnlyRootFilesystem must be true"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"container {name}: allowPrivilegeEscalation must be false"
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            yield f"container {name}: capabilities.drop must be [ALL]"
        if sc.get("privileged"):
            yield f"container {name}: must not be privileged"
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for what in ("memory", "cpu"):
                if what not in (res.get(part) or {}):
                    yield f"container {name}: resources.{part}.{what} is missing"


def main(paths):
    failed = pods = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                for spec in pod_specs(doc or {}):
                    pods += 1
                    name = (doc.get("metadata") or {}).get("name", "?")
                    for p in problems(spec):
                        print(f"{path}: {doc['kind']}/{name}: {p}")
                        failed += 1
    if pods == 0:
        print("check-pods: no pod found in " + " ".join(paths))
        return 1
    print(f"check-pods: {pods} pods hardened and sized" if not failed else "check-pods: FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
