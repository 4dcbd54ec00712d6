use super::FieldValue as V;
use super::*;
use proptest::prelude::*;

#[test]
fn table() {
    let pdf = ("format", V::Str("pdf"));
    let zip = ("format", V::Str("zip"));
    let typ = ("type", V::Str("report"));
    let cases: &[(&[FieldPair], &[FieldPair], bool)] = &[
        // no arguments: all matches everything, any nothing
        (&[], &[], true),
        (&[], &[pdf], true),
        (&[("x-match", V::Str("any"))], &[pdf], false),
        (&[("x-match", V::Str("all-with-x"))], &[], true),
        (&[("x-match", V::Str("any-with-x"))], &[pdf], false),
        // all / any
        (&[pdf, typ], &[typ, pdf], true),
        (&[pdf, typ], &[pdf], false),
        (&[("x-match", V::Str("any")), pdf, typ], &[pdf], true),
        (&[("x-match", V::Str("any")), pdf, typ], &[zip], false),
        (&[("x-match", V::Str("all")), pdf], &[zip], false),
        // void = presence
        (&[("format", V::Void)], &[zip], true),
        (&[("format", V::Void)], &[("format", V::Void)], true),
        (&[("format", V::Void)], &[typ], false),
        // x- arguments ignored unless -with-x
        (&[("x-tenant", V::Str("a"))], &[], true),
        (
            &[("x-match", V::Str("any")), ("x-tenant", V::Str("a"))],
            &[("x-tenant", V::Str("a"))],
            false,
        ),
        (
            &[("x-match", V::Str("all-with-x")), ("x-tenant", V::Str("a"))],
            &[],
            false,
        ),
        (
            &[("x-match", V::Str("all-with-x")), ("x-tenant", V::Str("a"))],
            &[("x-tenant", V::Str("a"))],
            true,
        ),
        (
            &[
                ("x-match", V::Str("any-with-x")),
                ("x-tenant", V::Str("a")),
                pdf,
            ],
            &[("x-tenant", V::Str("a"))],
            true,
        ),
        // x-match itself is never compared, even in -with-x modes
        (
            &[("x-match", V::Str("all-with-x"))],
            &[("x-match", V::Str("any"))],
            true,
        ),
        // invalid x-match reads as all
        (&[("x-match", V::Str("bogus")), pdf], &[pdf], true),
        (&[("x-match", V::Bytes(b"any")), pdf, typ], &[pdf], false),
        // value equality as Erlang ==
        (&[("n", V::Int(5))], &[("n", V::UInt(5))], true),
        (&[("n", V::Int(5))], &[("n", V::Float(5.0))], true),
        (&[("n", V::Int(5))], &[("n", V::Float(5.5))], false),
        (&[("n", V::Int(-1))], &[("n", V::UInt(u64::MAX))], false),
        (&[("n", V::Int(5))], &[("n", V::Str("5"))], false),
        (&[("n", V::Bool(true))], &[("n", V::Int(1))], false),
        (&[("n", V::Bool(true))], &[("n", V::Bool(true))], true),
        (&[("n", V::Str("x"))], &[("n", V::Bytes(b"x"))], true),
        (&[("n", V::Str("x"))], &[("n", V::Str("X"))], false),
        (&[("n", V::Str("x"))], &[("n", V::Void)], false),
        (
            &[("n", V::Float(f64::NAN))],
            &[("n", V::Float(f64::NAN))],
            false,
        ),
        // duplicates pair by occurrence
        (
            &[("a", V::Int(1)), ("a", V::Int(2))],
            &[("a", V::Int(1))],
            false,
        ),
        (
            &[("a", V::Int(1)), ("a", V::Int(2))],
            &[("a", V::Int(1)), ("a", V::Int(2))],
            true,
        ),
        (
            &[("a", V::Int(2))],
            &[("a", V::Int(1)), ("a", V::Int(2))],
            false,
        ),
    ];
    for (i, &(args, headers, expected)) in cases.iter().enumerate() {
        assert_eq!(
            matches(args, headers),
            expected,
            "case {i}: {args:?} vs {headers:?}"
        );
    }
}

#[test]
fn x_match_parsing() {
    assert_eq!(XMatch::from_args(&[]), Ok(XMatch::All));
    assert_eq!(
        XMatch::from_args(&[("x-match", V::Str("any-with-x"))]),
        Ok(XMatch::AnyWithX)
    );
    assert_eq!(
        XMatch::from_args(&[("x-match", V::Str("ANY"))]),
        Err(HeadersError::XMatchUnknown)
    );
    assert_eq!(
        XMatch::from_args(&[("x-match", V::Int(1))]),
        Err(HeadersError::XMatchNotString)
    );
    assert_eq!(
        XMatch::from_args_lenient(&[("x-match", V::Int(1))]),
        XMatch::All
    );
    assert!(HeadersError::XMatchUnknown
        .to_string()
        .contains("all-with-x"));
}

fn value() -> impl Strategy<Value = V<'static>> {
    prop_oneof![
        Just(V::Void),
        any::<bool>().prop_map(V::Bool),
        (-3i64..3).prop_map(V::Int),
        (0u64..3).prop_map(V::UInt),
        prop_oneof![Just(0.0), Just(1.0), Just(1.5)].prop_map(V::Float),
        prop_oneof![Just("a"), Just("1")].prop_map(V::Str),
        Just(V::Bytes(b"a")),
    ]
}

fn fields() -> impl Strategy<Value = Vec<FieldPair<'static>>> {
    proptest::collection::vec(
        (
            prop_oneof![Just("a"), Just("b"), Just("x-c"), Just("x-match")],
            value(),
        ),
        0..5,
    )
}

proptest! {
    #[test]
    fn any_is_weaker_than_all(args in fields(), headers in fields()) {
        let plain: Vec<FieldPair> = args.iter().copied().filter(|(n, _)| *n != "x-match").collect();
        let all = matches_mode(XMatch::All, &plain, &headers);
        let any = matches_mode(XMatch::Any, &plain, &headers);
        let counted = plain.iter().any(|(n, _)| !n.starts_with("x-"));
        // with something to check, all implies any; with nothing, all is true and any false
        if counted {
            prop_assert!(!all || any);
        } else {
            prop_assert!(all && !any);
        }
        // headers containing every argument verbatim (presence or equal) satisfy all
        prop_assert!(matches_mode(XMatch::AllWithX, &plain, &plain)
            || plain.iter().any(|(_, v)| matches!(v, V::Float(f) if f.is_nan())));
    }
}
