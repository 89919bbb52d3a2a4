//! RFC 8785 known-answer tests: the cyberphone/json-canonicalization `testdata` vectors, the
//! RFC's Appendix B number samples, and the inputs a strict canonicalizer must refuse.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Number, Value};
use stella_dsse::jcs::{self, JcsError, MAX_DEPTH};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jcs");

fn data(rel: &str) -> PathBuf {
    Path::new(DATA).join(rel)
}

fn canon_str(input: &str) -> String {
    let out = jcs::canonicalize(input.as_bytes()).expect("canonicalize");
    String::from_utf8(out).expect("canonical output is UTF-8")
}

fn vector_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data("input"))
        .expect("read tests/data/jcs/input")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[test]
fn testdata_vectors_match_byte_for_byte() {
    let names = vector_names();
    assert!(
        names.len() >= 7,
        "expected the cyberphone vectors, found {names:?}"
    );
    for name in &names {
        let input = fs::read(data(&format!("input/{name}"))).unwrap();
        let expected = fs::read(data(&format!("output/{name}"))).unwrap();
        let got = jcs::canonicalize(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got,
            expected,
            "{name}: got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
fn testdata_outhex_matches_output() {
    // Counted: an empty or missing folder must fail, not pass with nothing compared.
    let mut compared = 0;
    for entry in fs::read_dir(data("outhex")).unwrap() {
        compared += 1;
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let hex = fs::read_to_string(&path).unwrap();
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        let input = fs::read(data(&format!("input/{stem}.json"))).unwrap();
        assert_eq!(jcs::canonicalize(&input).unwrap(), bytes, "{stem}");
        assert_eq!(
            fs::read(data(&format!("output/{stem}.json"))).unwrap(),
            bytes,
            "{stem}"
        );
    }
    assert!(compared > 0, "no outhex vectors found");
}

#[test]
fn canonical_output_is_a_fixed_point() {
    let mut inputs: Vec<Vec<u8>> = vector_names()
        .iter()
        .map(|n| fs::read(data(&format!("input/{n}"))).unwrap())
        .collect();
    inputs.push(
        br#"{"b":[1.5,-0,1e21,{"\u00e9":"x","e":null}],"a":"\u0000\ud83d\ude02","\uffff":1,"\ud800\udc00":2}"#
            .to_vec(),
    );
    for input in inputs {
        let once = jcs::canonicalize(&input).unwrap();
        let twice = jcs::canonicalize(&once).unwrap();
        assert_eq!(once, twice, "{}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn rfc8785_appendix_b_numbers() {
    let table = fs::read_to_string(data("numbers.txt")).unwrap();
    let mut count = 0;
    for line in table.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hex, expected) = line.split_once(',').unwrap();
        let f = f64::from_bits(u64::from_str_radix(hex, 16).unwrap());
        let mut out = Vec::new();
        jcs::write_value(&Value::Number(Number::from_f64(f).unwrap()), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{hex}");
        // The expected text also round-trips through the parser to the same bytes.
        assert_eq!(canon_str(expected), expected, "{hex} via parse");
        count += 1;
    }
    assert!(count >= 24, "only {count} samples read");
}

#[test]
fn rfc8785_section_3_2_3_sorting_example() {
    // The RFC's own property-sorting example, which also has "\r" and "\n" keys.
    let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\u000a": "Newline",
  "1": "One",
  "\u0080": "Control\u007f",
  "\ud83d\ude02": "Smiley",
  "\u00f6": "Latin Small Letter O With Diaeresis",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "</script>": "Browser Challenge"
}"#;
    let expected = "{\"\\n\":\"Newline\",\"\\r\":\"Carriage Return\",\"1\":\"One\",\
\"</script>\":\"Browser Challenge\",\"\u{80}\":\"Control\u{7f}\",\
\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
\"\u{1f602}\":\"Smiley\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
    assert_eq!(canon_str(input), expected);
}

#[test]
fn utf16_order_supplementary_before_private_use() {
    // U+10000 is D800 DC00 in UTF-16 and so sorts before U+E000 and U+FFFF, though its UTF-8
    // bytes (F0 ...) sort after theirs (EE ..., EF ...).
    let input = r#"{"\uffff":3,"\ue000":2,"\ud800\udc00":1,"z":0}"#;
    assert_eq!(
        canon_str(input),
        "{\"z\":0,\"\u{10000}\":1,\"\u{e000}\":2,\"\u{ffff}\":3}"
    );
    let value = json!({ "\u{e000}": 2, "\u{10000}": 1 });
    let mut out = Vec::new();
    jcs::write_value(&value, &mut out).unwrap();
    assert_eq!(out, "{\"\u{10000}\":1,\"\u{e000}\":2}".as_bytes());
    // Nested objects are sorted too.
    assert_eq!(
        canon_str(r#"[{"b":{"\ufb33":1,"\ud83d\ude02":2},"a":0}]"#),
        "[{\"a\":0,\"b\":{\"\u{1f602}\":2,\"\u{fb33}\":1}}]"
    );
}

#[test]
fn rejects_duplicate_keys() {
    for (input, key) in [
        (r#"{"a":1,"a":2}"#, "a"),
        (r#"{"a":1,"b":{"c":1,"c":1}}"#, "c"),
        (r#"[{"x":{"y":[{"z":1,"z":2}]}}]"#, "z"),
        (r#"{"\u00e9":1,"é":2}"#, "é"),
    ] {
        match jcs::canonicalize(input.as_bytes()) {
            Err(JcsError::DuplicateKey(k)) => assert_eq!(k, key, "{input}"),
            other => panic!("{input}: expected DuplicateKey, got {other:?}"),
        }
    }
}

#[test]
fn rejects_trailing_data() {
    for input in ["{} {}", "[1]]", "1 2", "\"a\"x", "null,", "{}\0"] {
        assert!(
            matches!(
                jcs::canonicalize(input.as_bytes()),
                Err(JcsError::Syntax { .. })
            ),
            "{input:?}"
        );
    }
    // Surrounding whitespace alone is fine.
    assert_eq!(canon_str(" \t\r\n{}\n "), "{}");
}

#[test]
fn rejects_lone_surrogates() {
    for input in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud83dx""#,
        r#""\ud83d\u0041""#,
        r#""\ude02\ud83d""#,
        r#"{"\udfff":1}"#,
    ] {
        assert!(
            matches!(
                jcs::canonicalize(input.as_bytes()),
                Err(JcsError::LoneSurrogate { .. })
            ),
            "{input}"
        );
    }
    // Raw surrogate code points cannot appear in UTF-8 at all (CESU-8 style encoding).
    assert!(matches!(
        jcs::canonicalize(b"\"\xed\xa0\x80\""),
        Err(JcsError::InvalidUtf8 { offset: 1 })
    ));
}

#[test]
fn rejects_non_finite_literals() {
    for input in [
        "NaN",
        "Infinity",
        "-Infinity",
        "[1,NaN]",
        r#"{"a":Infinity}"#,
        "1e999",
    ] {
        assert!(
            matches!(
                jcs::canonicalize(input.as_bytes()),
                Err(JcsError::NonFinite)
            ),
            "{input}"
        );
    }
    assert!(jcs::canonicalize(b"nan").is_err());
    assert!(matches!(
        jcs::to_vec(&vec![1.0, f64::NAN]),
        Err(JcsError::NonFinite)
    ));
}

/// `to_vec` finds a non-finite float wherever serde puts it: in a sequence, tuple, tuple
/// struct, tuple variant, struct, struct variant and map value; the
/// same shapes with finite floats are accepted.
#[test]
fn to_vec_finds_non_finite_in_every_compound() {
    #[derive(serde::Serialize)]
    struct Tuple(u8, f64);
    #[derive(serde::Serialize)]
    struct Named {
        a: u8,
        b: f64,
    }
    #[derive(serde::Serialize)]
    enum E {
        T(u8, f64),
        S { a: u8, b: f64 },
    }
    fn check<T: serde::Serialize>(bad: T, good: T) {
        assert!(matches!(jcs::to_vec(&bad), Err(JcsError::NonFinite)));
        assert!(jcs::to_vec(&good).is_ok());
    }
    check(vec![f64::NAN], vec![1.5]);
    check((1u8, f64::INFINITY), (1u8, 2.5));
    check(Tuple(1, f64::NEG_INFINITY), Tuple(1, 0.5));
    check(E::T(1, f64::NAN), E::T(1, 0.5));
    check(Named { a: 1, b: f64::NAN }, Named { a: 1, b: 0.5 });
    check(E::S { a: 1, b: f64::NAN }, E::S { a: 1, b: 0.5 });
    check(
        std::collections::BTreeMap::from([("k", f64::NAN)]),
        std::collections::BTreeMap::from([("k", 0.25)]),
    );
}

#[test]
fn rejects_too_deep_nesting() {
    let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(canon_str(&at_limit), at_limit);
    let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(matches!(
        jcs::canonicalize(too_deep.as_bytes()),
        Err(JcsError::TooDeep)
    ));
    let objects = format!(
        "{}1{}",
        r#"{"a":"#.repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    assert!(matches!(
        jcs::canonicalize(objects.as_bytes()),
        Err(JcsError::TooDeep)
    ));
    // Far too deep must fail cleanly, not overflow the stack.
    let huge = "[".repeat(1_000_000);
    assert!(matches!(
        jcs::canonicalize(huge.as_bytes()),
        Err(JcsError::TooDeep)
    ));
}

#[test]
fn rejects_too_large_input() {
    let big = vec![b' '; jcs::MAX_INPUT_BYTES + 1];
    assert!(matches!(
        jcs::parse_strict(&big),
        Err(JcsError::TooLarge { limit }) if limit == jcs::MAX_INPUT_BYTES
    ));
}

#[test]
fn rejects_malformed_json() {
    for input in [
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "{a:1}",
        "'a'",
        "[1 2]",
        "{\"a\" 1}",
        "tru",
        "nul",
        "\u{feff}{}",
    ] {
        assert!(
            matches!(
                jcs::canonicalize(input.as_bytes()),
                Err(JcsError::Syntax { .. })
            ),
            "{input:?}"
        );
    }
    assert!(matches!(
        jcs::canonicalize(b"[\"\xc3\x28\"]"),
        Err(JcsError::InvalidUtf8 { offset: 2 })
    ));
}

#[test]
fn to_vec_matches_canonicalize() {
    #[derive(serde::Serialize)]
    struct Statement<'a> {
        #[serde(rename = "_type")]
        kind: &'a str,
        subject: Vec<Subject<'a>>,
        #[serde(rename = "predicateType")]
        predicate_type: &'a str,
        predicate: Value,
    }
    #[derive(serde::Serialize)]
    struct Subject<'a> {
        name: &'a str,
        digest: std::collections::BTreeMap<&'a str, &'a str>,
    }
    let statement = Statement {
        kind: "https://in-toto.io/Statement/v1",
        subject: vec![Subject {
            name: "pkg:oci/app@sha256:ab",
            digest: [("sha256", "ab")].into_iter().collect(),
        }],
        predicate_type: "https://slsa.dev/provenance/v1",
        predicate: json!({ "z": [1, 2.5, "\u{7}"], "a": null }),
    };
    let via_serde = jcs::to_vec(&statement).unwrap();
    let text = serde_json::to_string_pretty(&statement).unwrap();
    assert_eq!(via_serde, jcs::canonicalize(text.as_bytes()).unwrap());
    assert!(via_serde.starts_with(br#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"a":null,"z":[1,2.5,"\u0007"]}"#));
}
