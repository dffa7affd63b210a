#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (libFuzzer through cargo-fuzz) for
# RUNS inputs each (default a million), from seeds made of the project's own
# schemas, configuration and plan statements. A crash stops the run and
# leaves its input in fuzz/artifacts/<target>/: make it a regression case
# (a unit or property test) once fixed.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${1:-1000000}
CARGO_FUZZ=${CARGO_FUZZ:-cargo-fuzz}
# No sanitizer: Rust code without `unsafe` (forbidden in the workspace);
# the targets look for panics and disagreements.
FLAGS=(--sanitizer none --release)

mkdir -p corpus/decode corpus/schema_diff corpus/guard corpus/config
for schema in ../schemas/*.avsc; do
  name=$(basename "$schema" .avsc)
  cp "$schema" "corpus/schema_diff/$name"
  for other in ../schemas/*.avsc; do
    { cat "$schema"; printf '\377'; cat "$other"; } >"corpus/schema_diff/$name-$(basename "$other" .avsc)"
  done
done
for n in 0 1 2; do printf "\\$n\\000\\000\\000\\000\\001" >"corpus/decode/header$n"; done
printf 'ALTER TABLE orders ADD COLUMN coupon TEXT' >corpus/guard/add
printf 'ALTER TABLE orders ALTER COLUMN amount TYPE bigint' >corpus/guard/widen
printf 'ALTER TABLE orders ALTER COLUMN email DROP NOT NULL' >corpus/guard/nullable
printf 'ALTER TABLE orders RENAME COLUMN email TO customer_email' >corpus/guard/rename
printf 'CREATE TABLE orders__lines (id BIGINT, sku TEXT)' >corpus/guard/child
printf 'CREATE TABLE "orders__ref" (id bigint REFERENCES decoy (id)) INHERITS (decoy)' >corpus/guard/tied
printf 'ALTER TABLE U&"\\006Frders" ALTER COLUMN email TYPE bytea USING convert_to(email, '"'"'UTF8'"'"')' >corpus/guard/unicode
cp ../services/mend/src/default.toml corpus/config/default.toml

mkdir -p logs
for target in decode schema_diff guard config; do
  echo "fuzz target $target: $RUNS runs (log in fuzz/logs/$target.log)"
  if ! "$CARGO_FUZZ" fuzz run "${FLAGS[@]}" "$target" "corpus/$target" -- -runs="$RUNS" -max_len=4096 \
      >"logs/$target.log" 2>&1; then
    tail -n 40 "logs/$target.log"
    echo "fuzz target $target failed: its input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E '^(Done [0-9]+ runs|#[0-9]+[[:space:]]+(INITED|DONE))' "logs/$target.log"
done
