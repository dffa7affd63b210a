"""The independent judge of tests/tests/values.rs.

Reads JSON lines on stdin, one per dataset: its Avro schema, its records'
datums (hex, without the wire-format header), and its table's rows as
PostgreSQL (row_to_json, UTC) and SQLite (storage classes) return them.
Decodes every datum with fastavro (not apache-avro, which mend uses) and
compares every column with the form docs/values.md
defines. Prints each difference and exits 1 if there is any.
"""

import datetime
import decimal
import io
import json
import math
import struct
import sys
import uuid

import fastavro

decimal.getcontext().prec = 200
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


class Schemas:
    """Named types of one schema, to resolve references."""

    def __init__(self, schema):
        self.named = {}
        self.collect(schema, None)

    def collect(self, schema, namespace):
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "enum", "fixed"):
                ns = schema.get("namespace", namespace)
                name = schema["name"]
                full = name if "." in name or not ns else f"{ns}.{name}"
                self.named[full] = schema
                self.named.setdefault(name, schema)
                namespace = ns
            if kind == "record":
                for field in schema["fields"]:
                    self.collect(field["type"], namespace)
            elif kind == "array":
                self.collect(schema["items"], namespace)
            elif kind == "map":
                self.collect(schema["values"], namespace)

    def resolve(self, schema):
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return self.named.get(schema) or self.named[schema.split(".")[-1]]
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return self.resolve(schema["type"])
        return schema


def logical(schema):
    if isinstance(schema, dict):
        return schema.get("logicalType"), schema.get("type")
    return None, schema


def python_kind(schema, schemas):
    """What fastavro returns for a branch: how a union's branch is told."""
    schema = schemas.resolve(schema)
    lt, t = logical(schema)
    if lt in ("decimal",):
        return "decimal"
    if lt in ("timestamp-nanos", "local-timestamp-nanos"):
        return "integer"
    if lt in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"):
        return "datetime"
    if lt in ("time-millis", "time-micros"):
        return "time"
    if lt == "date":
        return "date"
    if lt == "uuid":
        return "uuid"
    if t in ("int", "long"):
        return "integer"
    if t in ("float", "double"):
        return "floating"
    if t in ("string", "enum"):
        return "string"
    if t in ("bytes", "fixed"):
        return "bytes"
    return t


def value_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "floating"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, datetime.datetime):
        return "datetime"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    if isinstance(value, uuid.UUID):
        return "uuid"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def branch_of(value, union, schemas):
    """The union branch fastavro read `value` with."""
    if isinstance(value, tuple):  # (record name, fields): return_record_name
        name, value = value
        for branch in union:
            resolved = schemas.resolve(branch)
            if isinstance(resolved, dict) and resolved.get("type") in ("record", "enum", "fixed"):
                if resolved["name"] == name or name.endswith("." + resolved["name"]):
                    return branch, value
        raise ValueError(f"no named branch {name}")
    kind = value_kind(value)
    for branch in union:
        pk = python_kind(branch, schemas)
        if pk == kind:  # a record is a (name, fields) tuple, so a dict is a map
            return branch, value
    raise ValueError(f"no branch for a {kind} in {union}")


def float_json(f):
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return f


def fraction(nanos):
    return ("." + f"{nanos:09d}".rstrip("0")) if nanos else ""


def instant_text(nanos, local):
    seconds, rest = divmod(nanos, 1_000_000_000)
    day = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    text = day.strftime("%Y-%m-%dT%H:%M:%S")
    if day.year < 1000:
        text = f"{day.year:04d}" + text[len(str(day.year)):]
    return text + fraction(rest) + ("" if local else "+00:00")


def datetime_nanos(value):
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def time_nanos(value):
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000_000 + value.microsecond * 1000


def decimal_text(value, scale):
    return f"{value:.{scale}f}" if scale else f"{value:f}".split(".")[0]


def big_decimal(raw):
    """Avro big-decimal: the unscaled value's bytes (length-prefixed) then the scale (zig-zag)."""
    stream = io.BytesIO(raw)

    def varint():
        shift, result = 0, 0
        while True:
            byte = stream.read(1)[0]
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)

    length = varint()
    unscaled = int.from_bytes(stream.read(length), "big", signed=True)
    scale = varint()
    return decimal.Decimal(unscaled).scaleb(-scale)


def nested(value, schema, schemas):
    """The JSON form of a value inside a JSON column."""
    schema = schemas.resolve(schema)
    if isinstance(schema, list):
        branch, inner = branch_of(value, schema, schemas)
        return nested(inner, branch, schemas)
    lt, t = logical(schema)
    if value is None:
        return None
    if lt == "decimal":
        return decimal_text(value, schema.get("scale", 0))
    if lt == "big-decimal":
        return ("bigdecimal", big_decimal(value))
    if lt == "uuid":
        return str(value)
    if lt == "date":
        return value.isoformat()
    if lt in ("time-millis", "time-micros"):
        nanos = time_nanos(value)
        return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}" + fraction(nanos % 1_000_000_000)
    if lt in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"):
        return instant_text(datetime_nanos(value), lt.startswith("local"))
    if lt in ("timestamp-nanos", "local-timestamp-nanos"):
        return instant_text(value, lt.startswith("local"))
    if lt == "duration":
        months, days, millis = struct.unpack("<III", value)
        return {"months": months, "days": days, "milliseconds": millis}
    if t == "record":
        if isinstance(value, tuple):
            value = value[1]
        return {f["name"]: nested(value[f["name"]], f["type"], schemas) for f in schema["fields"]}
    if t == "array":
        return [nested(v, schema["items"], schemas) for v in value]
    if t == "map":
        return {k: nested(v, schema["values"], schemas) for k, v in value.items()}
    if t in ("bytes", "fixed"):
        return value.hex()
    if t in ("float", "double"):
        return float_json(value)
    return value


def same_json(got, want):
    """Equal JSON forms: big-decimals by value, floats exactly."""
    if isinstance(want, tuple) and want[0] == "bigdecimal":
        return isinstance(got, str) and decimal.Decimal(got) == want[1]
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same_json, got, want))
    if isinstance(want, float) and isinstance(got, (int, float, decimal.Decimal)) and not isinstance(got, bool):
        # -0.0 == 0.0: PostgreSQL's jsonb keeps numbers as numeric, which has no negative zero.
        return float(got) == want
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int) and isinstance(got, (int, decimal.Decimal)):
        return got == want
    return got == want


def column_kind(schema, schemas):
    """How a top-level field is stored: the kind of its column."""
    schema = schemas.resolve(schema)
    if isinstance(schema, list):
        rest = [b for b in schema if b != "null"]
        if len(rest) == 1:
            return column_kind(rest[0], schemas)
        return "json"
    lt, t = logical(schema)
    if lt in ("decimal", "big-decimal", "uuid", "date", "time-millis", "time-micros", "timestamp-millis",
              "timestamp-micros", "timestamp-nanos", "local-timestamp-millis", "local-timestamp-micros",
              "local-timestamp-nanos"):
        return lt
    if lt == "duration" or t in ("record", "array", "map"):
        return "json"
    return t


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected_column(value, schema, schemas, dialect):
    """(comparison, expected) for a top-level field's value."""
    schema = schemas.resolve(schema)
    kind = column_kind(schema, schemas)
    if isinstance(schema, list) and kind != "json":
        if value is None:
            return None
        branch, value = branch_of(value, schema, schemas)
        schema = schemas.resolve(branch)
    if value is None:
        return None
    lt, t = logical(schema)
    if kind == "json":
        return ("json", nested(value, schema, schemas))
    if kind == "decimal":
        return ("text", decimal_text(value, schema.get("scale", 0))) if dialect == "sqlite" else \
            ("decimal", (value, schema.get("scale", 0)))
    if kind == "big-decimal":
        return ("number", big_decimal(value))
    if kind == "uuid":
        return ("text", str(value))
    if kind == "date":
        return ("text", value.isoformat())
    if kind in ("time-millis", "time-micros"):
        nanos = time_nanos(value)
        return ("int", nanos // 1_000_000 if kind == "time-millis" else nanos // 1000)
    if kind in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"):
        text = instant_text(datetime_nanos(value), kind.startswith("local"))
        return ("instant", text) if dialect == "postgres" else ("text", text)
    if kind in ("timestamp-nanos", "local-timestamp-nanos"):
        return ("text", instant_text(value, kind.startswith("local")))
    if t == "boolean":
        return ("int", int(value)) if dialect == "sqlite" else ("bool", value)
    if t in ("int", "long"):
        return ("int", value)
    if t == "float":
        return ("float32", value)
    if t == "double":
        return ("float", value)
    if t in ("string", "enum"):
        return ("text", value)
    if t in ("bytes", "fixed"):
        return ("bytes", value.hex())
    raise ValueError(f"no column form for {schema}")


def matches(got, expected, dialect):
    if expected is None:
        return got is None
    how, want = expected
    if how == "json":
        if dialect == "sqlite":
            if not isinstance(got, str):
                return False
            got = json.loads(got, parse_float=decimal.Decimal)
        return same_json(got, want)
    if how == "decimal":
        value, scale = want
        return isinstance(got, decimal.Decimal) and got == value and -got.as_tuple().exponent == scale or \
            (isinstance(got, int) and scale == 0 and got == value)
    if how == "number":
        if isinstance(got, str):
            got = decimal.Decimal(got)
        return got == want
    if how == "instant":
        if not isinstance(got, str):
            return False
        local = "+" not in got[10:] and "Z" not in got
        parsed = datetime.datetime.fromisoformat(got)
        return instant_text(datetime_nanos(parsed), local) == want
    if how == "bytes":
        if dialect == "sqlite":
            return got == {"blob": want}
        return got == "\\x" + want
    if how in ("float", "float32"):
        if isinstance(want, float) and math.isnan(want):
            return got == "NaN"
        if isinstance(want, float) and math.isinf(want):
            return got == ("Infinity" if want > 0 else "-Infinity")
        if not isinstance(got, (int, float, decimal.Decimal)) or isinstance(got, bool):
            return False
        return (f32(float(got)) == f32(want)) if how == "float32" else float(got) == want
    if how == "bool":
        return got is want
    if how == "int":
        return got == want and not isinstance(got, bool)
    return got == want


def main():
    differences, checked = [], 0
    for line in sys.stdin:
        case = json.loads(line, parse_float=decimal.Decimal)
        schema = json.loads(json.dumps(case["schema"], default=float))
        schemas = Schemas(schema)
        parsed = fastavro.parse_schema(schema)
        for index, datum in enumerate(case["datums"]):
            record = fastavro.schemaless_reader(io.BytesIO(bytes.fromhex(datum)), parsed, None,
                                                return_record_name=True)
            for dialect in ("postgres", "sqlite"):
                row = case[dialect][index]
                if isinstance(row, str):
                    row = json.loads(row, parse_float=decimal.Decimal)
                for field in schema["fields"]:
                    name = field["name"]
                    checked += 1
                    try:
                        expected = expected_column(record[name], field["type"], schemas, dialect)
                        ok = matches(row.get(name), expected, dialect)
                    except Exception as error:  # a judge that cannot judge is a difference
                        ok, expected = False, f"judge error {error!r}"
                    if not ok:
                        differences.append(
                            f"{case['dataset']} record {index} {dialect} column {name} "
                            f"({json.dumps(field['type'])}): got {row.get(name)!r}, expected {expected!r}")
    for difference in differences[:50]:
        print(difference)
    print(f"{checked} values checked, {len(differences)} differences")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
