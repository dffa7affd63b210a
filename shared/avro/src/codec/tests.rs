use super::*;

#[test]
fn reads_the_schema_id_from_the_header() {
    assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9, 9]), Some(258));
    assert_eq!(schema_id(&[0, 0, 0, 0, 7]), Some(7));
    assert_eq!(schema_id(&[1, 0, 0, 0, 7]), None, "wrong magic byte");
    assert_eq!(schema_id(&[0, 0, 0]), None, "short header");
    assert_eq!(schema_id(b"{\"json\":1}"), None);
}

#[test]
fn a_record_cut_short_is_an_error_not_nulls() -> Result<(), apache_avro::Error> {
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"O","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"]}]}"#,
    )?;
    let reader = GenericDatumReader::builder(&schema).build()?;
    let cut = [0x02]; // id 1, then nothing
    // apache-avro alone reads the missing union as null ...
    let lenient = reader.read_value(&mut &cut[..])?;
    assert_eq!(
        lenient,
        Value::Record(vec![("id".into(), Value::Long(1)), ("email".into(), Value::Union(0, Box::new(Value::Null)))])
    );
    // ... which would load the record with a NULL email.
    let mut strict = StrictReader::new(&cut);
    assert!(reader.read_value(&mut strict).is_err());
    assert!(strict.ended());
    let whole = [0x02, 0x02, 0x02, b'a'];
    let mut strict = StrictReader::new(&whole);
    assert!(reader.read_value(&mut strict).is_ok());
    assert!(!strict.ended() && strict.rest().is_empty());
    Ok(())
}
