"""Runs a public project's Avro schema history through mend's diff and
measures the rename detector on a labelled set.

    python tests/python/scripts/schema_history.py REPO_DIR [SCHEMA_DIR]

REPO_DIR is a git checkout (or bare mirror) of apache/fineract (Apache
Fineract, a core banking system); SCHEMA_DIR defaults to its Avro schemas.
Every commit that changed a schema gives one pair per changed record
(parent, commit), each side parsed with every schema of its commit (named
types defined in other files resolve; Fineract's `bigdecimal` template is
its decimal(20, 8)). The pairs go through `cargo run --example history`
(mend's classify and Avro's SchemaCompatibility). Printed: the pairs, how
many the contract cannot read and whether mend saw a change in each, and
the rename detector's precision and recall against LABELS.
"""

import json
import subprocess
import sys

BIGDECIMAL = '{"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 8}'

# Field renames proven by their commits (the field's line changed in place,
# same type, same position; or the same doc under a new name), and
# look-alikes that are not renames. (commit prefix, old name, new name).
RENAMES = {
    ("4f312f33f6", "code", "role"),
    ("4f312f33f6", "description", "value"),
    ("4f312f33f6", "allowPartialPeriodInterestCalcualtion", "allowPartialPeriodInterestCalculation"),
    ("4f312f33f6", "rejectedOnDate", "rejectedDate"),
    ("4f312f33f6", "approvedOnDate", "approvedDate"),
    ("4f312f33f6", "activatedOnDate", "activatedDate"),
    ("4f312f33f6", "closedOnDate", "closedDate"),
    ("d80aa77c02", "id", "loanId"),
    ("d80aa77c02", "accountNo", "loanAccountNo"),
    ("d80aa77c02", "externalId", "loanExternalId"),
    ("adcd76154e", "id", "loanId"),
    ("adcd76154e", "accountNo", "loanAccountNo"),
    ("adcd76154e", "externalId", "loanExternalId"),
    ("90896a6467", "payload", "data"),
}
# FINERACT-2081 replaced the accrued interest by the payable interest, a
# different computation (computeTotalUnpaidPayableDueInterestAmount): same
# type, near names, different values. Reverted and redone.
LOOK_ALIKES = {
    (commit, f"totalUnpaid{a}{due}Interest", f"totalUnpaid{b}{due}Interest")
    for commit, a, b in [("737455f52f", "Accrued", "Payable"), ("526fb6b3a8", "Payable", "Accrued"),
                         ("06edb4c7d9", "Accrued", "Payable")]
    for due in ["Due", "NotDue"]
}


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout


def pairs(repo, root):
    def schemas_at(commit):
        files = [f for f in git(repo, "ls-tree", "-r", "--name-only", commit, "--", root).split() if f.endswith(".avsc")]
        return {f: git(repo, "show", f"{commit}:{f}").replace('"bigdecimal"', BIGDECIMAL) for f in files}

    for commit in git(repo, "log", "--format=%H", "--reverse", "--", root).split():
        parent = git(repo, "rev-parse", f"{commit}^").strip()
        changed = [f for f in git(repo, "diff", "--name-only", parent, commit, "--", root).split() if f.endswith(".avsc")]
        if not changed:
            continue
        old, new = schemas_at(parent), schemas_at(commit)
        for f in changed:
            if f not in old or f not in new:
                continue
            try:
                record = json.loads(new[f])
            except ValueError:
                continue
            if record.get("type") != "record":
                continue
            name = f"{record.get('namespace', '')}.{record['name']}".lstrip(".")
            yield {"id": f"{commit[:10]} {f.rsplit('/', 1)[-1]}", "name": name,
                   "old": list(old.values()), "new": list(new.values())}


def main():
    repo = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else "fineract-avro-schemas/src/main/avro"
    lines = "".join(json.dumps(p) + "\n" for p in pairs(repo, root))
    out = subprocess.run(["cargo", "run", "-q", "-p", "mend-tests", "--example", "history"], input=lines,
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    parsed = [r for r in rows if "error" not in r]
    unreadable = [r for r in parsed if not r["contract_can_read"]]
    print(f"{len(rows)} pairs, {len(parsed)} parsed; the contract cannot read {len(unreadable)}, "
          f"mend saw a change in {sum(1 for r in unreadable if r['changes'])} of them")
    found = {(r["id"].split()[0], c["from"], c["to"]) for r in parsed for c in r["changes"]
             if c["kind"] == "field_renamed"}
    tp, fp, fn = found & RENAMES, found - RENAMES, RENAMES - found
    print(f"renames: {len(RENAMES)} labelled, {len(LOOK_ALIKES)} look-alikes; proposed {len(found)}: "
          f"{len(tp)} right, {len(fp)} wrong ({len(fp & LOOK_ALIKES)} of them look-alikes)")
    print(f"precision {len(tp) / max(len(found), 1):.2f}, recall {len(tp) / len(RENAMES):.2f}")
    for miss in sorted(fn):
        print("  missed", *miss)
    for wrong in sorted(fp):
        print("  wrong ", *wrong)


if __name__ == "__main__":
    main()
