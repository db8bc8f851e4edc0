//! Label selectors (`?labelSelector=`, `spec.selector` of workloads and services) and field
//! selectors (`?fieldSelector=`), parsed and matched as kube-apiserver does.
//!
//! A label selector comes either from the query-string syntax (`app=web,tier!=db`,
//! `env in (prod,qa)`, `!canary`) or from a `metav1.LabelSelector` object
//! (`matchLabels` + `matchExpressions`). Field selectors support `=`, `==` and `!=` on the
//! fields each kind declares selectable; any other field is an error naming it, which the
//! server answers with 400 like kube-apiserver's "field label not supported".

use std::{collections::BTreeMap, fmt};

use serde_json::Value;

use crate::{registry::Resource, validation};

#[cfg(test)]
mod tests;

/// Why a label selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Syntax {
        found: String,
        expected: &'static str,
    },
    #[error("unable to parse requirement: key {key:?}: {message}")]
    InvalidKey { key: String, message: String },
    #[error("unable to parse requirement: value {value:?} of key {key:?}: {message}")]
    InvalidValue {
        key: String,
        value: String,
        message: String,
    },
    #[error("key {key:?}: {message}")]
    InvalidRequirement { key: String, message: &'static str },
    #[error("operator {operator:?} is not recognized")]
    UnknownOperator { operator: String },
    #[error("invalid label selector: {message}")]
    InvalidObject { message: String },
}

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`, and every `matchLabels` entry.
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key in (a,b)`, `In`
    In,
    /// `key notin (a,b)`, `NotIn`
    NotIn,
    /// `key`, `Exists`
    Exists,
    /// `!key`, `DoesNotExist`
    DoesNotExist,
    /// `key>1` (integer comparison)
    GreaterThan,
    /// `key<1` (integer comparison)
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and without duplicates; empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Checks the key and values and normalises the values.
    ///
    /// # Errors
    /// A key or value with bad syntax, or a value count the operator does not take.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        if let Some(message) = validation::is_qualified_name(key).into_iter().next() {
            return Err(SelectorError::InvalidKey {
                key: key.to_owned(),
                message,
            });
        }
        let count_error = match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            Operator::GreaterThan | Operator::LessThan if values[0].parse::<i64>().is_err() => {
                Some("for 'Gt', 'Lt' operators, the value must be an integer")
            }
            _ => None,
        };
        if let Some(message) = count_error {
            return Err(SelectorError::InvalidRequirement {
                key: key.to_owned(),
                message,
            });
        }
        for value in &values {
            if let Some(message) = validation::is_valid_label_value(value).into_iter().next() {
                return Err(SelectorError::InvalidValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    message,
                });
            }
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// Whether a label set satisfies this requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let has = |v: &String| self.values.binary_search(v).is_ok();
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => value.is_some_and(has),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), Some(Ok(want))) = (
                    value.map(|v| v.parse::<i64>()),
                    self.values.first().map(|v| v.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// A label selector: all requirements must hold. The empty selector matches everything; the
/// selector made from a missing (`null`) `metav1.LabelSelector` matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Matches every object.
    #[must_use]
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object (what a missing `spec.selector` selects).
    #[must_use]
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            nothing: false,
        }
    }

    /// Parses the query-string syntax: comma-separated `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x)`, `a`, `!a` (and `a>1`, `a<1`).
    ///
    /// # Errors
    /// Bad syntax, a bad key or value, or an operator given the wrong number of values.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        Parser::new(selector).parse().map(Self::from_requirements)
    }

    /// Builds the selector of a `metav1.LabelSelector` object (`matchLabels` +
    /// `matchExpressions`); `null` selects nothing and `{}` everything.
    ///
    /// # Errors
    /// A field of the wrong type, an unknown operator, or a bad key or value.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let obj = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(obj) => obj,
            _ => {
                return Err(SelectorError::InvalidObject {
                    message: "a label selector must be an object".to_owned(),
                });
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let Some(value) = value.as_str() else {
                        return Err(SelectorError::InvalidObject {
                            message: format!("matchLabels[{key}] must be a string"),
                        });
                    };
                    requirements.push(Requirement::new(
                        key,
                        Operator::Equals,
                        vec![value.to_owned()],
                    )?);
                }
            }
            Some(_) => {
                return Err(SelectorError::InvalidObject {
                    message: "matchLabels must be an object".to_owned(),
                });
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for expr in exprs {
                    requirements.push(expression(expr)?);
                }
            }
            Some(_) => {
                return Err(SelectorError::InvalidObject {
                    message: "matchExpressions must be a list".to_owned(),
                });
            }
        }
        Ok(Self::from_requirements(requirements))
    }

    /// The selector `k=v` for every entry (a Service's or a DaemonSet node selector).
    ///
    /// # Errors
    /// A bad key or value.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, vec![v.clone()]))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::from_requirements)
    }

    /// The requirements, sorted by key.
    #[must_use]
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the selector matches every label set.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether the selector matches no label set at all (a missing selector).
    #[must_use]
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// Whether a label set satisfies every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the labels of an object (`metadata.labels`) satisfy every requirement.
    #[must_use]
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj.pointer("/metadata/labels")))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A JSON string map (labels, a selector map) as a `BTreeMap`; non-string values are skipped.
#[must_use]
pub fn labels_of(labels: Option<&Value>) -> BTreeMap<String, String> {
    labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn expression(expr: &Value) -> Result<Requirement, SelectorError> {
    let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
    let op = expr.get("operator").and_then(Value::as_str).unwrap_or("");
    let operator = match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(SelectorError::UnknownOperator {
                operator: other.to_owned(),
            });
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| SelectorError::InvalidObject {
                        message: format!("values of key {key:?} must be strings"),
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(SelectorError::InvalidObject {
                message: format!("values of key {key:?} must be a list"),
            });
        }
    };
    Requirement::new(key, operator, values)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
    Open,
    Close,
    End,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Comma => ",".to_owned(),
            Token::Eq => "=".to_owned(),
            Token::DoubleEq => "==".to_owned(),
            Token::NotEq => "!=".to_owned(),
            Token::Bang => "!".to_owned(),
            Token::Gt => ">".to_owned(),
            Token::Lt => "<".to_owned(),
            Token::Open => "(".to_owned(),
            Token::Close => ")".to_owned(),
            Token::End => String::new(),
        }
    }
}

fn lex(input: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        chars.next();
        let token = match c {
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '>' => Token::Gt,
            '<' => Token::Lt,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::DoubleEq
            }
            '=' => Token::Eq,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::NotEq
            }
            '!' => Token::Bang,
            first => {
                let mut ident = String::from(first);
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",()<>=!".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                Token::Ident(ident)
            }
        };
        out.push(token);
    }
    out.push(Token::End);
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Self {
            tokens: lex(input),
            pos: 0,
        }
    }

    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn parse(mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut out = Vec::new();
        if *self.peek() == Token::End {
            return Ok(out);
        }
        loop {
            out.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(out),
                Token::Comma => {}
                other => {
                    return Err(SelectorError::Syntax {
                        found: other.text(),
                        expected: "',' or 'end of string'",
                    });
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Token::Ident(key) => Ok(key),
            other => Err(SelectorError::Syntax {
                found: other.text(),
                expected: "identifier",
            }),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Token::Bang {
            self.next();
            let key = self.key()?;
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        let key = self.key()?;
        let operator = match self.peek() {
            Token::Comma | Token::End => {
                return Requirement::new(&key, Operator::Exists, Vec::new());
            }
            Token::Eq => Operator::Equals,
            Token::DoubleEq => Operator::DoubleEquals,
            Token::NotEq => Operator::NotEquals,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            Token::Ident(word) if word == "in" => Operator::In,
            Token::Ident(word) if word == "notin" => Operator::NotIn,
            other => {
                return Err(SelectorError::Syntax {
                    found: other.text(),
                    expected: "'=', '!=', '==', 'in', notin'",
                });
            }
        };
        self.next();
        let values = if matches!(operator, Operator::In | Operator::NotIn) {
            self.value_set()?
        } else {
            // `a=` selects the empty value.
            match self.peek() {
                Token::Ident(v) => {
                    let v = v.clone();
                    self.next();
                    vec![v]
                }
                Token::Comma | Token::End => vec![String::new()],
                other => {
                    return Err(SelectorError::Syntax {
                        found: other.text(),
                        expected: "identifier",
                    });
                }
            }
        };
        Requirement::new(&key, operator, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Token::Open {
            return Err(SelectorError::Syntax {
                found: self.tokens[self.pos - 1].text(),
                expected: "'('",
            });
        }
        let mut values = Vec::new();
        // Go's parser accepts empty members (`in (a,,b)`, `in (,)`) as the empty value.
        let mut want_value = true;
        loop {
            match self.next() {
                Token::Ident(v) if want_value => {
                    values.push(v);
                    want_value = false;
                }
                Token::Comma => {
                    if want_value {
                        values.push(String::new());
                    }
                    want_value = true;
                }
                Token::Close => {
                    if want_value && !values.is_empty() {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                other => {
                    return Err(SelectorError::Syntax {
                        found: other.text(),
                        expected: "',', ')' or identifier",
                    });
                }
            }
        }
    }
}

/// Why a field selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Syntax { selector: String, term: String },
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape { sequence: String },
    #[error("invalid field selector: unescaped character in value: {character}")]
    UnescapedCharacter { character: char },
    /// The message kube-apiserver answers with 400 for a field it cannot select on.
    #[error("field label not supported: {field}")]
    Unsupported { field: String },
}

/// The operator of a field selector term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=` or `==`
    Equals,
    /// `!=`
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

/// A field selector: all terms must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses comma-separated `field=value`, `field==value` and `field!=value` terms; `\,`,
    /// `\=` and `\\` escape those characters in values.
    ///
    /// # Errors
    /// A term without an operator or a bad escape.
    pub fn parse(selector: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = Vec::new();
        for part in split_terms(selector) {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(part) else {
                return Err(FieldSelectorError::Syntax {
                    selector: selector.to_owned(),
                    term: part.to_owned(),
                });
            };
            terms.push(FieldTerm {
                field: field.to_owned(),
                operator,
                value: unescape(raw)?,
            });
        }
        terms.sort_by(|a, b| a.field.cmp(&b.field));
        Ok(Self { terms })
    }

    /// Parses and checks that every field is selectable on the resource.
    ///
    /// # Errors
    /// As [`FieldSelector::parse`] and [`FieldSelector::check`].
    pub fn parse_for(resource: &Resource, selector: &str) -> Result<Self, FieldSelectorError> {
        let parsed = Self::parse(selector)?;
        parsed.check(resource)?;
        Ok(parsed)
    }

    /// Checks that every field is selectable on the resource.
    ///
    /// # Errors
    /// [`FieldSelectorError::Unsupported`] naming the first field that is not.
    pub fn check(&self, resource: &Resource) -> Result<(), FieldSelectorError> {
        let fields = selectable_fields(resource);
        match self
            .terms
            .iter()
            .find(|t| !fields.contains(&t.field.as_str()))
        {
            Some(t) => Err(FieldSelectorError::Unsupported {
                field: t.field.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The terms, sorted by field.
    #[must_use]
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an `=` term requires of a field, e.g. to serve `metadata.name=x` as a get.
    #[must_use]
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    /// Whether an object of the resource satisfies every term. A field the resource cannot
    /// select on never matches (check with [`FieldSelector::check`] first to answer 400).
    #[must_use]
    pub fn matches(&self, resource: &Resource, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let Some(value) = field_value(resource, obj, &t.field) else {
                return false;
            };
            match t.operator {
                FieldOperator::Equals => value == t.value,
                FieldOperator::NotEquals => value != t.value,
            }
        })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            let value = t
                .value
                .replace('\\', r"\\")
                .replace(',', r"\,")
                .replace('=', r"\=");
            write!(f, "{}{op}{value}", t.field)?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Finds the first unescaped `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape(s: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(other) => {
                    return Err(FieldSelectorError::InvalidEscape {
                        sequence: format!("\\{other}"),
                    });
                }
                None => {
                    return Err(FieldSelectorError::InvalidEscape {
                        sequence: "\\".to_owned(),
                    });
                }
            },
            ',' | '=' => return Err(FieldSelectorError::UnescapedCharacter { character: c }),
            c => out.push(c),
        }
    }
    Ok(out)
}

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.phase"];
const SECRET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "type"];
const REPLICASET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];
const JOB_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.successful"];

/// The fields a field selector may name on this resource.
#[must_use]
pub fn selectable_fields(resource: &Resource) -> &'static [&'static str] {
    match (resource.group, resource.kind) {
        ("", "Pod") => POD_FIELDS,
        ("", "Event") => EVENT_FIELDS,
        ("", "Node") => NODE_FIELDS,
        ("", "Namespace") => NAMESPACE_FIELDS,
        ("", "Secret") => SECRET_FIELDS,
        ("apps", "ReplicaSet") => REPLICASET_FIELDS,
        ("batch", "Job") => JOB_FIELDS,
        _ => META_FIELDS,
    }
}

fn str_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// The value of a selectable field of an object, as kube-apiserver's field set has it (absent
/// strings are "", booleans "true"/"false", counts decimal); `None` if the resource cannot
/// select on the field.
#[must_use]
pub fn field_value(resource: &Resource, obj: &Value, field: &str) -> Option<String> {
    if !selectable_fields(resource).contains(&field) {
        return None;
    }
    Some(match field {
        "metadata.name" => str_at(obj, "/metadata/name"),
        "metadata.namespace" => str_at(obj, "/metadata/namespace"),
        "spec.hostNetwork" => bool_at(obj, "/spec/hostNetwork"),
        "spec.unschedulable" => bool_at(obj, "/spec/unschedulable"),
        "status.replicas" => int_at(obj, "/status/replicas"),
        "status.successful" => int_at(obj, "/status/succeeded"),
        "status.podIP" => {
            let ip = str_at(obj, "/status/podIP");
            if ip.is_empty() {
                str_at(obj, "/status/podIPs/0/ip")
            } else {
                ip
            }
        }
        "source" => {
            let component = str_at(obj, "/source/component");
            if component.is_empty() {
                str_at(obj, "/reportingComponent")
            } else {
                component
            }
        }
        other => str_at(obj, &format!("/{}", other.replace('.', "/"))),
    })
}
