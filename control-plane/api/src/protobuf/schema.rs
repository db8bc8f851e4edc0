//! The shape of the generated field table (`table.rs`) and lookups into it.

use super::table::{KINDS, MESSAGES};

/// One protobuf message: its fields, or a JSON form of its own.
#[derive(Debug)]
pub(super) struct Message {
    /// Proto name, e.g. `k8s.io.api.core.v1.Pod`; errors name the message with it.
    pub name: &'static str,
    /// A JSON form of its own instead of an object of its fields.
    pub special: Option<Special>,
    /// Sorted by number.
    pub fields: &'static [Field],
}

#[derive(Debug)]
pub(super) struct Field {
    pub number: u32,
    /// The exact JSON name (`podIP`, `clusterIPs`).
    pub json: &'static str,
    pub ty: Ty,
    pub label: Label,
    /// Whether a zero scalar read from the wire shows in the JSON, and whether an absent list
    /// or map shows as `null`.
    ///
    /// Go writes every non-pointer field to the wire, set or not, and its JSON leaves zero
    /// `omitempty` fields out; pointers (`replicas: 0` is not "unset") and non-`omitempty`
    /// fields (`containerPort`, `status.allowed`) keep them, and Go shows a nil list that is not
    /// `omitempty` (`ClusterRole.rules`) as `null`. The generator reads pointer-ness
    /// and `omitempty` from the Go types in a kubectl binary, and falls back to the Go doc
    /// comments k8s-pb carries (`+optional`) for fields newer than that binary.
    pub keep_zero: bool,
    /// A Go embedded struct (`json:",inline"`): a nested message on the wire whose fields JSON
    /// shows in the parent (`Probe.handler` holds `httpGet`, `exec`, ...). `json` is empty.
    pub inline: bool,
}

/// The value type of a field (of each element for lists, of each value for maps; map keys are
/// always strings in Kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    Int32,
    Int64,
    Double,
    String,
    /// Base64 in JSON.
    Bytes,
    /// Index into `MESSAGES`.
    Message(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
    Optional,
    Repeated,
    Map,
}

/// Messages that Go marshals to JSON with a custom `MarshalJSON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// meta/v1 Time: RFC 3339 in UTC with whole seconds; empty is the zero time, `null`.
    Time,
    /// meta/v1 MicroTime: RFC 3339 with six fractional digits.
    MicroTime,
    /// meta/v1 Duration: Go's `time.Duration` string (`1h0m0s`).
    Duration,
    /// meta/v1 FieldsV1: its `raw` bytes are the JSON.
    FieldsV1,
    /// A message whose only field is `repeated string items = 1` (ExtraValue, Verbs): a JSON
    /// array.
    StringList,
    /// api/resource Quantity: its string.
    Quantity,
    /// util/intstr IntOrString: a number or a string.
    IntOrString,
    /// runtime RawExtension: its `raw` bytes are the JSON of an embedded object.
    RawExtension,
}

impl Message {
    pub(super) fn field(&self, number: u32) -> Option<&'static Field> {
        self.fields
            .binary_search_by_key(&number, |f| f.number)
            .ok()
            .map(|i| &self.fields[i])
    }
}

pub(super) fn message(id: u16) -> &'static Message {
    &MESSAGES[usize::from(id)]
}

/// The message of a kind posted at an apiVersion. Kinds of meta/v1 (DeleteOptions, ...) are
/// registered in every group, so they are found under any apiVersion.
pub(super) fn find_kind(api_version: &str, kind: &str) -> Option<u16> {
    if let Ok(i) = KINDS.binary_search_by(|(v, k, _)| (*v, *k).cmp(&(api_version, kind))) {
        return Some(KINDS[i].2);
    }
    let name = format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}");
    find_message(&name)
}

/// The index of a message by proto name.
pub(super) fn find_message(name: &str) -> Option<u16> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .and_then(|i| u16::try_from(i).ok())
}
