use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::registry;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn label_selectors_parse_to_their_canonical_form() {
    let cases = [
        ("", ""),
        ("app=web", "app=web"),
        ("app==web", "app==web"),
        ("app!=web", "app!=web"),
        ("  app = web , tier != db ", "app=web,tier!=db"),
        ("tier in (fe, be,fe)", "tier in (be,fe)"),
        ("tier notin (db)", "tier notin (db)"),
        ("canary", "canary"),
        ("!canary", "!canary"),
        ("z=1,a=2,!m", "a=2,!m,z=1"),
        (
            "example.com/role=web,app.kubernetes.io/name in (a)",
            "app.kubernetes.io/name in (a),example.com/role=web",
        ),
        ("a=", "a="),
        ("a=,b", "a=,b"),
        ("gen>3,gen<10", "gen>3,gen<10"),
        ("env in (,prod)", "env in (,prod)"),
    ];
    for (input, want) in cases {
        let s = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(s.to_string(), want, "{input}");
    }
    assert!(LabelSelector::parse("").unwrap().is_everything());
}

#[test]
fn label_selector_parse_errors() {
    let cases = [
        (
            "=web",
            "unable to parse requirement: found '=', expected: identifier",
        ),
        (
            "app=web,",
            "unable to parse requirement: found '', expected: identifier",
        ),
        (
            "app in web",
            "unable to parse requirement: found 'web', expected: '('",
        ),
        (
            "app in (a",
            "unable to parse requirement: found '', expected: ',', ')' or identifier",
        ),
        (
            "app in ()",
            "key \"app\": for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            "app web",
            "unable to parse requirement: found 'web', expected: '=', '!=', '==', 'in', notin'",
        ),
        (
            "a=b c",
            "unable to parse requirement: found 'c', expected: ',' or 'end of string'",
        ),
        (
            "app=we b",
            "unable to parse requirement: found 'b', expected: ',' or 'end of string'",
        ),
        (
            "-bad=x",
            "unable to parse requirement: key \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        (
            "app=-web",
            "unable to parse requirement: value \"-web\" of key \"app\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
        (
            "gen>x",
            "key \"gen\": for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "!",
            "unable to parse requirement: found '', expected: identifier",
        ),
        (
            "a/b/c=d",
            "unable to parse requirement: key \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        ),
    ];
    for (input, want) in cases {
        let err = LabelSelector::parse(input).unwrap_err();
        assert_eq!(err.to_string(), want, "{input}");
    }
    let long = format!("a={}", "v".repeat(64));
    assert!(matches!(
        LabelSelector::parse(&long),
        Err(SelectorError::InvalidValue { .. })
    ));
}

#[test]
fn label_selectors_match() {
    let web = labels(&[("app", "web"), ("tier", "fe"), ("gen", "5")]);
    let bare = labels(&[]);
    let cases = [
        ("", true, true),
        ("app=web", true, false),
        ("app==web", true, false),
        ("app!=web", false, true),
        ("app!=db", true, true),
        ("app", true, false),
        ("!app", false, true),
        ("tier in (fe,be)", true, false),
        ("tier notin (fe)", false, true),
        ("tier notin (be)", true, true),
        ("app=web,tier=be", false, false),
        ("app=web,!canary", true, false),
        ("gen>4", true, false),
        ("gen>5", false, false),
        ("gen<6", true, false),
        ("app=", false, false),
    ];
    for (selector, on_web, on_bare) in cases {
        let s = LabelSelector::parse(selector).unwrap();
        assert_eq!(s.matches(&web), on_web, "{selector} on web");
        assert_eq!(s.matches(&bare), on_bare, "{selector} on no labels");
    }
    assert!(
        LabelSelector::parse("app=")
            .unwrap()
            .matches(&labels(&[("app", "")]))
    );
    assert!(
        !LabelSelector::parse("gen>1")
            .unwrap()
            .matches(&labels(&[("gen", "x")]))
    );
    let obj = json!({"metadata": {"labels": {"app": "web"}}});
    assert!(
        LabelSelector::parse("app=web")
            .unwrap()
            .matches_object(&obj)
    );
    assert!(
        !LabelSelector::parse("app=web")
            .unwrap()
            .matches_object(&json!({}))
    );
}

#[test]
fn metav1_label_selectors() {
    let sel = LabelSelector::from_json(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "zone", "operator": "Exists", "values": []},
        ],
    }))
    .unwrap();
    assert_eq!(
        sel.to_string(),
        "app=web,!canary,env notin (dev),tier in (be,fe),zone"
    );
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "be"), ("zone", "a")])));
    assert!(!sel.matches(&labels(&[
        ("app", "web"),
        ("tier", "be"),
        ("zone", "a"),
        ("canary", "1")
    ])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "be")])));

    assert!(
        LabelSelector::from_json(&json!({}))
            .unwrap()
            .is_everything()
    );
    let nothing = LabelSelector::from_json(&json!(null)).unwrap();
    assert!(nothing.is_nothing());
    assert!(!nothing.matches(&labels(&[])));

    let bad = [
        (
            json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
            "operator \"Equals\" is not recognized",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "key \"a\": for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            "key \"a\": values set must be empty for exists and does not exist",
        ),
        (
            json!({"matchLabels": {"a": 1}}),
            "invalid label selector: matchLabels[a] must be a string",
        ),
        (
            json!({"matchLabels": []}),
            "invalid label selector: matchLabels must be an object",
        ),
        (
            json!({"matchExpressions": {}}),
            "invalid label selector: matchExpressions must be a list",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}),
            "invalid label selector: values of key \"a\" must be a list",
        ),
        (
            json!("app=web"),
            "invalid label selector: a label selector must be an object",
        ),
    ];
    for (input, want) in bad {
        assert_eq!(
            LabelSelector::from_json(&input).unwrap_err().to_string(),
            want,
            "{input}"
        );
    }
    let map = LabelSelector::from_map(&labels(&[("b", "2"), ("a", "1")])).unwrap();
    assert_eq!(map.to_string(), "a=1,b=2");
}

fn res(group: &str, plural: &str) -> &'static Resource {
    let version = if group == "autoscaling" { "v2" } else { "v1" };
    registry::find(group, version, plural).unwrap()
}

#[test]
fn field_selectors_parse() {
    let s = FieldSelector::parse("status.phase!=Succeeded,spec.nodeName=n1,metadata.name==web")
        .unwrap();
    assert_eq!(
        s.terms(),
        [
            FieldTerm {
                field: "metadata.name".to_owned(),
                operator: FieldOperator::Equals,
                value: "web".to_owned()
            },
            FieldTerm {
                field: "spec.nodeName".to_owned(),
                operator: FieldOperator::Equals,
                value: "n1".to_owned()
            },
            FieldTerm {
                field: "status.phase".to_owned(),
                operator: FieldOperator::NotEquals,
                value: "Succeeded".to_owned()
            },
        ]
    );
    assert_eq!(
        s.to_string(),
        "metadata.name=web,spec.nodeName=n1,status.phase!=Succeeded"
    );
    assert_eq!(s.required_value("metadata.name"), Some("web"));
    assert_eq!(s.required_value("status.phase"), None);
    assert!(FieldSelector::parse("").unwrap().is_empty());
    assert!(FieldSelector::parse(",").unwrap().is_empty());

    let escaped = FieldSelector::parse(r"message=a\,b\=c\\d").unwrap();
    assert_eq!(escaped.terms()[0].value, r"a,b=c\d");
    assert_eq!(escaped.to_string(), r"message=a\,b\=c\\d");
    assert_eq!(FieldSelector::parse("a=").unwrap().terms()[0].value, "");

    let errors = [
        (
            "metadata.name",
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
        ),
        ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
        (
            "a=b=c",
            "invalid field selector: unescaped character in value: =",
        ),
        (
            r"a=b\x",
            r"invalid field selector: invalid escape sequence: \x",
        ),
        (
            r"a=b\",
            r"invalid field selector: invalid escape sequence: \",
        ),
    ];
    for (input, want) in errors {
        assert_eq!(
            FieldSelector::parse(input).unwrap_err().to_string(),
            want,
            "{input}"
        );
    }
}

#[test]
fn unsupported_fields_are_named() {
    let cases = [
        ("", "pods", "spec.nodeName=n1,status.phase!=Failed", Ok(())),
        (
            "",
            "pods",
            "spec.containers=x",
            Err("field label not supported: spec.containers"),
        ),
        (
            "",
            "services",
            "spec.clusterIP=1.2.3.4",
            Err("field label not supported: spec.clusterIP"),
        ),
        (
            "",
            "nodes",
            "spec.unschedulable=false,metadata.name=n",
            Ok(()),
        ),
        (
            "",
            "events",
            "involvedObject.uid=u,involvedObject.name=p,involvedObject.namespace=d,involvedObject.kind=Pod,type=Warning,reason=BackOff,source=kubelet",
            Ok(()),
        ),
        ("", "secrets", "type=Opaque", Ok(())),
        (
            "",
            "configmaps",
            "type=Opaque",
            Err("field label not supported: type"),
        ),
        ("batch", "jobs", "status.successful=1", Ok(())),
        ("apps", "deployments", "metadata.namespace=default", Ok(())),
        (
            "apps",
            "deployments",
            "status.replicas=1",
            Err("field label not supported: status.replicas"),
        ),
        ("apps", "replicasets", "status.replicas=1", Ok(())),
    ];
    for (group, plural, selector, want) in cases {
        let got = FieldSelector::parse_for(res(group, plural), selector)
            .map(drop)
            .map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_owned), "{plural} {selector}");
    }
}

#[test]
fn field_selectors_match() {
    let pod = json!({
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                 "serviceAccountName": "default", "hostNetwork": true},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]},
    });
    let event = json!({
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u-1",
                           "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled", "type": "Normal", "reportingComponent": "kubelet",
    });
    let cases: &[(&str, &str, &Value, &str, bool)] = &[
        ("", "pods", &pod, "spec.nodeName=n1", true),
        ("", "pods", &pod, "spec.nodeName=n2", false),
        (
            "",
            "pods",
            &pod,
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
            true,
        ),
        ("", "pods", &pod, "status.phase!=Running", false),
        ("", "pods", &pod, "status.podIP=10.0.0.5", true),
        ("", "pods", &pod, "spec.hostNetwork=true", true),
        (
            "",
            "pods",
            &pod,
            "spec.restartPolicy=Always,spec.schedulerName=default-scheduler,spec.serviceAccountName=default",
            true,
        ),
        (
            "",
            "pods",
            &pod,
            "metadata.name=web-1,metadata.namespace=default",
            true,
        ),
        ("", "pods", &pod, "status.nominatedNodeName=", true),
        ("", "pods", &pod, "spec.containers=x", false),
        (
            "",
            "events",
            &event,
            "involvedObject.uid=u-1,involvedObject.name=web-1,involvedObject.namespace=default",
            true,
        ),
        (
            "",
            "events",
            &event,
            "involvedObject.kind=Pod,involvedObject.apiVersion=v1,involvedObject.resourceVersion=7",
            true,
        ),
        (
            "",
            "events",
            &event,
            "involvedObject.fieldPath=spec.containers{app},reason=Pulled,type=Normal",
            true,
        ),
        ("", "events", &event, "source=kubelet", true),
        ("", "events", &event, "type=Warning", false),
        (
            "",
            "nodes",
            &json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}}),
            "spec.unschedulable=true",
            true,
        ),
        (
            "",
            "nodes",
            &json!({"metadata": {"name": "n1"}}),
            "spec.unschedulable=false",
            true,
        ),
        (
            "",
            "nodes",
            &json!({"metadata": {"name": "n1"}}),
            "metadata.namespace=",
            true,
        ),
        (
            "",
            "secrets",
            &json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"}),
            "type=kubernetes.io/tls",
            true,
        ),
        (
            "",
            "namespaces",
            &json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}}),
            "status.phase=Active",
            true,
        ),
        (
            "batch",
            "jobs",
            &json!({"metadata": {"name": "j"}, "status": {"succeeded": 2}}),
            "status.successful=2",
            true,
        ),
        (
            "batch",
            "jobs",
            &json!({"metadata": {"name": "j"}}),
            "status.successful=0",
            true,
        ),
        (
            "apps",
            "replicasets",
            &json!({"metadata": {"name": "r"}, "status": {"replicas": 3}}),
            "status.replicas!=0",
            true,
        ),
    ];
    for (group, plural, obj, selector, want) in cases {
        let s = FieldSelector::parse(selector).unwrap();
        assert_eq!(
            s.matches(res(group, plural), obj),
            *want,
            "{plural} {selector}"
        );
    }
    let event_source = json!({"source": {"component": "scheduler"}, "reportingComponent": "x"});
    assert_eq!(
        field_value(res("", "events"), &event_source, "source").as_deref(),
        Some("scheduler")
    );
}
