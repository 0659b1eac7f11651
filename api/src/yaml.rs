//! YAML in and out, the same way in every program: manifests in the state directory, the
//! speaker's standalone configuration, the DNS proxy's configuration, and test fixtures.
//!
//! - YAML 1.2 core schema: `yes`, `on` and `off` are strings and only `true`/`false` are
//!   booleans (a label value `on` must not turn into `true`).
//! - A plain number with leading zeros (`0755`) stays the text it is: octal in YAML 1.1,
//!   decimal in 1.2, and a string to whoever wrote it as a label value.
//! - A key given twice in one mapping is an error, not last-one-wins.
//! - The parser streams events straight into the Rust types: no tree of the whole document
//!   is built first, so a configuration of a million prefixes costs what its values cost.
//! - The limits against hostile input (nesting depth, aliases per anchor) stay; the limits
//!   on the number of nodes, events and scalar bytes grow with the input, since a file's
//!   size is already bounded by whoever could write it.
//! - Error messages give the line and column, never a snippet of the input: a
//!   configuration can hold values that must not reach a log.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use serde_saphyr::Error;
pub use serde_saphyr::SerializeError;

/// The options for `text`: see the module documentation.
fn options(text: &str) -> serde_saphyr::Options {
    let len = text.len();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = budget.max_events.max(len.saturating_mul(2));
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    budget.max_documents = budget.max_documents.max(len / 4);
    serde_saphyr::options! {
        budget: Some(budget),
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// One YAML document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_saphyr::from_str_with_options(text, options(text))
}

/// Every document of a multi-document stream (`---` between them); empty and null documents
/// are skipped.
pub fn documents<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, Error> {
    serde_saphyr::from_multiple_with_options(text, options(text))
}

/// `value` as one YAML document (block style, no leading `---`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, SerializeError> {
    serde_saphyr::to_string(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn yaml_1_1_booleans_stay_strings_and_real_ones_are_booleans() {
        let v: Value = from_str("a: yes\nb: on\nc: off\nd: true\ne: False\n").unwrap();
        assert_eq!(
            v,
            json!({"a": "yes", "b": "on", "c": "off", "d": true, "e": false})
        );
    }

    #[test]
    fn numbers_and_nulls_are_inferred_as_in_yaml_1_2() {
        let v: Value = from_str("a: 10\nb: 0755\nc: ~\nd: 1.5\ne: '10'\nf: 0x1F\n").unwrap();
        assert_eq!(
            v,
            json!({"a": 10, "b": "0755", "c": null, "d": 1.5, "e": "10", "f": 31})
        );
    }

    #[test]
    fn a_duplicate_key_is_an_error_with_its_line() {
        let e = from_str::<Value>("a: 1\nb: 2\na: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn errors_give_the_position_but_not_the_input() {
        let e = from_str::<Value>("password: hunter2\nbad: [\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn documents_skip_empty_ones_and_keep_order() {
        let docs: Vec<Value> =
            documents("---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
    }

    #[test]
    fn a_large_input_is_not_refused_by_the_node_budget() {
        let mut text = String::from("items:\n");
        for i in 0..300_000 {
            text.push_str(&format!("  - {{ n: {i} }}\n"));
        }
        let v: Value = from_str(&text).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 300_000);
    }

    #[test]
    fn alias_bombs_are_still_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(from_str::<Value>(&text).is_err());
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let v = json!({
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"ip": "2001:db8::a"}]},
                       "conditions": [], "note": "yes", "n": "010", "empty": {}}
        });
        let text = to_string(&v).unwrap();
        assert_eq!(from_str::<Value>(&text).unwrap(), v, "{text}");
    }
}
