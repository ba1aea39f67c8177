//! The event catalogue for integrators, `docs/events.md`, checked against the validator: every event type
//! of the model has a section, every example is accepted, every field marked required is refused by name
//! when it is missing, and every documented field is one the validator reads.
//!
//! A section is a heading "### `<type>`", a table `| field | type | required | notes |` whose field
//! column is the payload field in backticks and whose required column is `yes` or `no`, and exactly one
//! fenced `json` example: a whole envelope.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::validate;
use crate::model::{self as m, EventType};

const DOC: &str = include_str!("../../../docs/events.md");
const MODEL: &str = include_str!("../model.rs");
const TABLE_HEADER: &str = "| field | type | required | notes |";

struct Field {
    name: String,
    required: bool,
}

struct Section {
    event_type: String,
    fields: Vec<Field>,
    example: Value,
}

/// The sections of the catalogue; a malformed one fails the test, saying what is wrong.
fn sections() -> Vec<Section> {
    DOC.split("\n### `")
        .skip(1)
        .map(|chunk| {
            let (event_type, rest) = chunk.split_once('`').expect("a heading \"### `<type>`\"");
            assert!(rest.starts_with('\n'), "`{event_type}`: nothing may follow the type on its heading");
            // The section ends at the next heading of any level.
            let body = rest.find("\n#").map_or(rest, |end| &rest[..end]);

            assert!(
                body.lines().any(|l| l.trim_end() == TABLE_HEADER),
                "`{event_type}`: no table with the header `{TABLE_HEADER}`"
            );
            let fields: Vec<Field> = body
                .lines()
                .map(str::trim_end)
                .filter(|l| l.starts_with('|') && *l != TABLE_HEADER && !l.starts_with("|-"))
                .map(|line| {
                    let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
                    assert_eq!(cells.len(), 4, "`{event_type}`: a row has 4 cells: {line}");
                    let name = cells[0].strip_prefix('`').and_then(|c| c.strip_suffix('`'));
                    let name =
                        name.unwrap_or_else(|| panic!("`{event_type}`: the field in backticks: {line}"));
                    let required = match cells[2] {
                        "yes" => true,
                        "no" => false,
                        other => panic!("`{event_type}`: required is `yes` or `no`, not `{other}`: {line}"),
                    };
                    Field { name: name.to_string(), required }
                })
                .collect();
            assert!(!fields.is_empty(), "`{event_type}`: no payload fields in the table");

            assert_eq!(body.matches("```json").count(), 1, "`{event_type}`: exactly one ```json example");
            let start = body.find("```json\n").expect("```json on a line of its own") + "```json\n".len();
            let len = body[start..].find("\n```").expect("the end of the example");
            let example: Value = serde_json::from_str(&body[start..start + len])
                .unwrap_or_else(|e| panic!("`{event_type}`: the example is not JSON: {e}"));
            assert!(example["payload"].is_object(), "`{event_type}`: the example has a payload object");

            Section { event_type: event_type.to_string(), fields, example }
        })
        .collect()
}

/// The wire name of every `EventType` variant, read from model.rs so that a new variant fails these
/// tests until it is documented.
fn model_event_types() -> BTreeSet<String> {
    let start = MODEL.find("pub enum EventType {").expect("`pub enum EventType {` in model.rs");
    let block = &MODEL[start..];
    // The platform's catalogue ends where the types the host emits begin.
    let end = block.find("// Emitted by the host").or_else(|| block.find("\n}"));
    let block = &block[..end.expect("the end of EventType")];
    let mut names = BTreeSet::new();
    let mut variants = 0;
    for line in block.lines().skip(1).map(str::trim) {
        if let Some(name) = line.strip_prefix("#[serde(rename = \"").and_then(|r| r.strip_suffix("\")]")) {
            names.insert(name.to_string());
        } else if !line.is_empty() && !line.starts_with("//") && !line.starts_with("#[") {
            variants += 1;
        }
    }
    assert_eq!(names.len(), variants, "every EventType variant has its own #[serde(rename = \"…\")]");
    for name in &names {
        let t: EventType = serde_json::from_value(json!(name))
            .unwrap_or_else(|e| panic!("`{name}`, read from model.rs, is not an EventType: {e}"));
        assert_eq!(&m::wire_name(t), name);
    }
    names
}

fn payload(example: &Value) -> &Map<String, Value> {
    example["payload"].as_object().expect("a payload object")
}

/// The field the validator names when it refuses `event`; `None` when it accepts it.
fn refused_field(event: &Value) -> Option<String> {
    validate(event, jiff::Timestamp::now()).err().map(|e| e.field)
}

/// Whether the validator reads `field` of this example: a value of the wrong type (an object) is
/// refused, naming the field.
fn reads(example: &Value, field: &str) -> bool {
    let mut event = example.clone();
    event["payload"][field] = json!({"not": "a value"});
    refused_field(&event) == Some(format!("payload.{field}"))
}

/// Fails with every problem at once, not only the first.
fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "docs/events.md disagrees with the validator:\n{}", problems.join("\n"));
}

#[test]
fn every_event_type_is_documented_once() {
    let sections = sections();
    let documented: BTreeSet<String> = sections.iter().map(|s| s.event_type.clone()).collect();
    assert_eq!(documented.len(), sections.len(), "an event type has two sections");
    let model = model_event_types();
    let missing: Vec<&String> = model.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&model).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "not documented: {missing:?}; documented but not in the model: {unknown:?}"
    );
}

#[test]
fn every_example_is_accepted() {
    let mut problems = Vec::new();
    for s in sections() {
        if s.example["event_type"] != json!(s.event_type) {
            problems
                .push(format!("`{}`: the example's event_type is {}", s.event_type, s.example["event_type"]));
        }
        if let Err(e) = validate(&s.example, jiff::Timestamp::now()) {
            problems.push(format!("`{}`: the example is refused: {}: {}", s.event_type, e.field, e.message));
        }
    }
    assert_none(problems);
}

#[test]
fn a_required_field_missing_is_refused_by_name() {
    let mut problems = Vec::new();
    for s in sections() {
        for f in s.fields.iter().filter(|f| f.required) {
            if !payload(&s.example).contains_key(&f.name) {
                problems.push(format!("`{}`: the example lacks the required `{}`", s.event_type, f.name));
                continue;
            }
            let mut event = s.example.clone();
            event["payload"].as_object_mut().expect("a payload object").remove(&f.name);
            let expected = format!("payload.{}", f.name);
            let got = refused_field(&event);
            if got.as_deref() != Some(expected.as_str()) {
                problems.push(format!(
                    "`{}`: without `{}` the validator answers {got:?}, not {expected}",
                    s.event_type, f.name
                ));
            }
        }
    }
    assert_none(problems);
}

#[test]
fn every_documented_field_is_read_by_the_validator() {
    let sections = sections();
    // Fields the validator reads for some documented example: a field read only in some cases
    // (`minutes` of a time limit, `amount_minor` of a money limit) is read in another section's example.
    let read_somewhere: BTreeSet<&str> = sections
        .iter()
        .flat_map(|s| s.fields.iter().filter(|f| reads(&s.example, &f.name)).map(|f| f.name.as_str()))
        .collect();
    let mut problems = Vec::new();
    for s in &sections {
        let documented: BTreeSet<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
        for name in payload(&s.example).keys() {
            if !documented.contains(name.as_str()) {
                problems
                    .push(format!("`{}`: the example sends `{name}`, which the table lacks", s.event_type));
            }
        }
        for f in &s.fields {
            let known =
                reads(&s.example, &f.name) || (!f.required && read_somewhere.contains(f.name.as_str()));
            if !known {
                problems.push(format!("`{}`: the validator does not read `{}`", s.event_type, f.name));
            }
        }
    }
    assert_none(problems);
}
