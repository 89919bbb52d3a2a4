//! Statement parser: never panics; accepted statements canonicalise to a fixed point.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stella_dsse::Statement;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = Statement::from_json(data) {
        let bytes = st.to_canonical_json().expect("canonical");
        let again = Statement::from_json(&bytes).expect("canonical output parses");
        assert_eq!(again.to_canonical_json().expect("canonical"), bytes);
    }
});
