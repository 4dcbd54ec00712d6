use super::{number_from_str, option_number_from_str, Numeric};
use ::serde::de::DeserializeOwned;
use ::serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Plain {
    #[allow(dead_code)]
    user_id: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ad {
    #[serde(deserialize_with = "number_from_str")]
    user_id: u64,
}

#[derive(Debug, Deserialize)]
struct One<T: Numeric> {
    #[serde(deserialize_with = "number_from_str")]
    v: T,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Numeric"))]
struct Maybe<T: Numeric> {
    #[serde(default, deserialize_with = "option_number_from_str")]
    v: Option<T>,
}

/// `{"v": <json>}` decoded into `One<T>`: the value or the error's text.
fn one<T: Numeric + DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str::<One<T>>(&format!(r#"{{"v":{json}}}"#))
        .map(|o| o.v)
        .map_err(|e| e.to_string())
}

fn maybe<T: Numeric + DeserializeOwned>(body: &str) -> Result<Option<T>, String> {
    serde_json::from_str::<Maybe<T>>(body)
        .map(|o| o.v)
        .map_err(|e| e.to_string())
}

#[test]
fn a_plain_typed_payload_refuses_php_numeric_strings() {
    // The defect the helpers fix: what PHP sends does not decode into a plain u64.
    let err = serde_json::from_str::<Plain>(r#"{"userId":"7"}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"invalid type: string "7", expected u64"#),
        "{err}"
    );
}

#[test]
fn php_numeric_string_decodes_into_a_typed_payload() {
    let ad: Ad = serde_json::from_str(r#"{"userId":"7"}"#).unwrap();
    assert_eq!(ad.user_id, 7);
    let ad: Ad = serde_json::from_str(r#"{"userId":7}"#).unwrap();
    assert_eq!(ad.user_id, 7);
}

#[test]
fn integers_accept_numbers_numeric_strings_and_whole_floats() {
    assert_eq!(one::<u64>("7"), Ok(7));
    assert_eq!(one::<u64>(r#""7""#), Ok(7));
    assert_eq!(one::<u64>(r#""+7""#), Ok(7));
    assert_eq!(one::<u64>(r#""007""#), Ok(7));
    assert_eq!(one::<u64>("7.0"), Ok(7));
    assert_eq!(one::<u64>(r#""18446744073709551615""#), Ok(u64::MAX));
    assert_eq!(one::<u64>("18446744073709551615"), Ok(u64::MAX));
    assert_eq!(one::<i64>(r#""-7""#), Ok(-7));
    assert_eq!(one::<i64>("-7"), Ok(-7));
    assert_eq!(one::<i8>(r#""-128""#), Ok(-128));
    assert_eq!(one::<u8>("255"), Ok(255));
    assert_eq!(one::<u32>("-0.0"), Ok(0));
    assert_eq!(one::<u32>(r#""-0""#), Ok(0));
    assert_eq!(
        one::<u128>(r#""340282366920938463463374607431768211455""#),
        Ok(u128::MAX)
    );
    assert_eq!(
        one::<i128>(r#""-170141183460469231731687303715884105728""#),
        Ok(i128::MIN)
    );
    assert_eq!(one::<usize>(r#""42""#), Ok(42));
    assert_eq!(one::<isize>(r#""-42""#), Ok(-42));
}

#[test]
fn integers_refuse_what_is_not_a_whole_number_in_range() {
    let cases: &[(&str, &str)] = &[
        (r#""7x""#, r#"invalid value: string "7x", expected a u8 as a JSON number or a numeric string"#),
        (r#""""#, r#"invalid value: string "", expected a u8 as a JSON number or a numeric string"#),
        (r#"" 7""#, r#"invalid value: string " 7", expected a u8 as a JSON number or a numeric string"#),
        (r#""7.0""#, r#"invalid value: string "7.0", expected a u8 as a JSON number or a numeric string"#),
        (r#""1e2""#, r#"invalid value: string "1e2", expected a u8 as a JSON number or a numeric string"#),
        (r#""-""#, r#"invalid value: string "-", expected a u8 as a JSON number or a numeric string"#),
        (r#""300""#, r#"invalid value: string "300", expected a number within the range of u8"#),
        (r#""-1""#, r#"invalid value: string "-1", expected a number within the range of u8"#),
        ("300", "invalid value: integer `300`, expected a number within the range of u8"),
        ("-1", "invalid value: integer `-1`, expected a number within the range of u8"),
        ("7.5", "invalid value: floating point `7.5`, expected a u8 as a JSON number or a numeric string"),
        ("256.0", "invalid value: floating point `256.0`, expected a number within the range of u8"),
        ("1e300", "invalid value: floating point `1e+300`, expected a number within the range of u8"),
        ("true", "invalid type: boolean `true`, expected a u8 as a JSON number or a numeric string"),
        ("null", "invalid type: null, expected a u8 as a JSON number or a numeric string"),
        ("[7]", "invalid type: sequence, expected a u8 as a JSON number or a numeric string"),
        (r#"{"v":7}"#, "invalid type: map, expected a u8 as a JSON number or a numeric string"),
    ];
    for (json, message) in cases {
        let err = one::<u8>(json).unwrap_err();
        assert!(err.starts_with(message), "{json}: {err}");
    }
    let err = one::<u64>(r#""18446744073709551616""#).unwrap_err();
    assert!(err.contains("within the range of u64"), "{err}");
    let err = one::<u64>("18446744073709551616").unwrap_err();
    assert!(err.contains("within the range of u64"), "{err}");
    let err = one::<i64>(r#""9223372036854775808""#).unwrap_err();
    assert!(err.contains("within the range of i64"), "{err}");
}

#[test]
fn floats_accept_numbers_and_finite_numeric_strings() {
    assert_eq!(one::<f64>(r#""19.99""#), Ok(19.99));
    assert_eq!(one::<f64>("19.99"), Ok(19.99));
    assert_eq!(one::<f64>("7"), Ok(7.0));
    assert_eq!(one::<f64>("-7"), Ok(-7.0));
    assert_eq!(one::<f64>(r#""-7""#), Ok(-7.0));
    assert_eq!(one::<f64>(r#""1e3""#), Ok(1000.0));
    assert_eq!(one::<f64>(r#"".5""#), Ok(0.5));
    assert_eq!(one::<f32>(r#""0.25""#), Ok(0.25));
    assert_eq!(one::<f32>("0.25"), Ok(0.25));
}

#[test]
fn floats_refuse_non_numbers_and_non_finite_values() {
    let cases: &[(&str, &str)] = &[
        (
            r#""""#,
            r#"invalid value: string "", expected a f64 as a JSON number or a numeric string"#,
        ),
        (
            r#""19,99""#,
            r#"invalid value: string "19,99", expected a f64 as a JSON number or a numeric string"#,
        ),
        (
            r#""NaN""#,
            r#"invalid value: string "NaN", expected a f64 as a JSON number or a numeric string"#,
        ),
        (
            r#""inf""#,
            r#"invalid value: string "inf", expected a f64 as a JSON number or a numeric string"#,
        ),
        (
            r#""-infinity""#,
            r#"invalid value: string "-infinity", expected a f64 as a JSON number or a numeric string"#,
        ),
        (
            r#""1e400""#,
            r#"invalid value: string "1e400", expected a number within the range of f64"#,
        ),
        (
            "false",
            "invalid type: boolean `false`, expected a f64 as a JSON number or a numeric string",
        ),
    ];
    for (json, message) in cases {
        let err = one::<f64>(json).unwrap_err();
        assert!(err.starts_with(message), "{json}: {err}");
    }
    let err = one::<f32>(r#""1e39""#).unwrap_err();
    assert!(err.contains("within the range of f32"), "{err}");
    let err = one::<f32>("1e39").unwrap_err();
    assert!(err.contains("within the range of f32"), "{err}");
}

#[test]
fn option_reads_null_missing_numbers_and_numeric_strings() {
    assert_eq!(maybe::<u32>(r#"{"v":null}"#), Ok(None));
    assert_eq!(maybe::<u32>("{}"), Ok(None));
    assert_eq!(maybe::<u32>(r#"{"v":"7"}"#), Ok(Some(7)));
    assert_eq!(maybe::<u32>(r#"{"v":7}"#), Ok(Some(7)));
    assert_eq!(maybe::<f64>(r#"{"v":"19.99"}"#), Ok(Some(19.99)));
    let err = maybe::<u32>(r#"{"v":""}"#).unwrap_err();
    assert!(
        err.starts_with(
            r#"invalid value: string "", expected a u32 as a JSON number or a numeric string"#
        ),
        "{err}"
    );
    let err = maybe::<u8>(r#"{"v":"256"}"#).unwrap_err();
    assert!(err.contains("within the range of u8"), "{err}");
    let err = maybe::<u8>(r#"{"v":[]}"#).unwrap_err();
    assert!(err.starts_with("invalid type: sequence"), "{err}");
}

/// Every input of a list, against every target type: an answer, never a panic.
#[test]
fn never_panics() {
    let inputs = [
        "0",
        "-0",
        "1",
        "-1",
        "0.5",
        "-0.5",
        "1e308",
        "-1e308",
        "1e-308",
        "5e-324",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "340282366920938463463374607431768211456",
        "170141183460469231731687303715884105728.0",
        "-170141183460469231731687303715884105728.0",
        r#""""#,
        r#""-""#,
        r#""+""#,
        r#"".""#,
        r#""e""#,
        r#""1e""#,
        r#""0x10""#,
        r#""١""#,
        r#""\u0000""#,
        r#""99999999999999999999999999999999999999999999999""#,
        r#""-99999999999999999999999999999999999999999999999""#,
        r#""1e99999""#,
        r#""NaN""#,
        r#""-nan""#,
        r#""Infinity""#,
        "true",
        "null",
        "[]",
        "{}",
    ];
    macro_rules! all {
        ($($t:ty),*) => {$(
            for json in inputs {
                let _ = one::<$t>(json);
                let _ = maybe::<$t>(&format!(r#"{{"v":{json}}}"#));
            }
        )*};
    }
    all!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);
    // Bounds of the float-to-integer path: exactly 2^127 is out of i128's and u128's
    // reach through that path, one below the bottom is refused.
    assert!(one::<u128>("170141183460469231731687303715884105728.0").is_err());
    assert!(one::<i128>("-170141183460469231731687303715884105728.0").is_ok());
    assert!(one::<i128>("-340282366920938463463374607431768211456.0").is_err());
}
