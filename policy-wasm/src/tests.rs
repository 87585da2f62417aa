//! Semantics tests through the same entry point the wasm export uses.

use crate::handle;
use crate::ip::{parse_addr, parse_cidr, Addr};
use crate::json::{parse, Value};

fn ask(request: &str) -> Value {
    let text = handle(request.as_bytes());
    parse(&text).unwrap_or_else(|e| panic!("answer is not JSON ({}): {}", e, text))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("")
}

const WEB: &str = r#"{"namespace":"default","name":"web-1","labels":{"app":"web"},"namespaceLabels":{"kubernetes.io/metadata.name":"default","team":"a"},"addresses":["10.1.0.5","fd00::5"]}"#;
const DB: &str = r#"{"namespace":"default","name":"db-1","labels":{"app":"db"},"namespaceLabels":{"kubernetes.io/metadata.name":"default","team":"a"},"addresses":["10.1.0.6","fd00::6"]}"#;
const PROD_API: &str = r#"{"namespace":"prod","name":"api-1","labels":{"app":"api"},"namespaceLabels":{"kubernetes.io/metadata.name":"prod","team":"b"},"addresses":["10.2.0.7"]}"#;
const PROD_WEB: &str = r#"{"namespace":"prod","name":"web-2","labels":{"app":"web"},"namespaceLabels":{"kubernetes.io/metadata.name":"prod","team":"b"},"addresses":["10.2.0.8"]}"#;
const OUTSIDE: &str = r#"{"address":"203.0.113.9"}"#;
const NEAR: &str = r#"{"address":"10.9.1.1"}"#;

fn verdict(policies: &str, from: &str, to: &str, port: u16, protocol: &str) -> Value {
    ask(&format!(
        r#"{{"op":"verdict","policies":{},"from":{},"to":{},"port":{},"protocol":"{}"}}"#,
        policies, from, to, port, protocol
    ))
}

fn plan(policies: &str, pod: &str) -> Value {
    let answer = ask(&format!(r#"{{"op":"plan","policies":{},"pod":{}}}"#, policies, pod));
    assert_eq!(answer.get("ok"), Some(&Value::Bool(true)), "{}", answer.to_json());
    answer.get("plan").cloned().unwrap()
}

/// Runs one side of a plan the way the host installs it: rules in order,
/// first match decides, then the default.
fn run_plan(
    plan: &Value,
    dir: &str,
    peer_sets: &[String],
    peer: Option<Addr>,
    protocol: &str,
    port: u16,
) -> (String, Option<(String, i64)>) {
    let side = plan.get(dir).unwrap();
    for rule in side.get("rules").unwrap().as_array().unwrap() {
        let peers = rule.get("peers").unwrap().as_array().unwrap();
        let peer_ok = peers.is_empty()
            || peers.iter().any(|p| match p.get("set") {
                Some(set) => peer_sets.iter().any(|m| m == set.as_str().unwrap()),
                None => {
                    let cidr = parse_cidr(s(p, "cidr")).unwrap();
                    let except = p.get("except").unwrap().as_array().unwrap();
                    peer.map_or(false, |a| {
                        cidr.contains(&a)
                            && !except.iter().any(|x| parse_cidr(x.as_str().unwrap()).unwrap().contains(&a))
                    })
                }
            });
        let ports = rule.get("ports").unwrap().as_array().unwrap();
        let port_ok = ports.is_empty()
            || ports.iter().any(|p| {
                s(p, "protocol") == protocol
                    && match (p.get("port").and_then(|x| x.as_int()), p.get("endPort").and_then(|x| x.as_int())) {
                        (Some(lo), Some(hi)) => lo <= port as i64 && port as i64 <= hi,
                        (None, None) => true,
                        other => panic!("port without endPort: {:?}", other),
                    }
            });
        if peer_ok && port_ok {
            return (
                s(rule, "action").to_string(),
                Some((s(rule, "policy").to_string(), rule.get("index").unwrap().as_int().unwrap())),
            );
        }
    }
    let isolated = side.get("isolated") == Some(&Value::Bool(true));
    ((if isolated { "deny" } else { "allow" }).to_string(), None)
}

fn member_of(plan: &Value) -> Vec<String> {
    plan.get("memberOf").unwrap().as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn is_pod(endpoint: &str) -> bool {
    parse(endpoint).unwrap().get("address").is_none()
}

/// Checks that the verdict agrees with both plans, half by half.
fn check_against_plans(policies: &str, from: &str, to: &str, port: u16, protocol: &str) -> Value {
    let v = verdict(policies, from, to, port, protocol);
    assert_eq!(v.get("ok"), Some(&Value::Bool(true)), "{}", v.to_json());
    let flow = v.get("flow").unwrap();
    let addr = |k: &str| flow.get(k).and_then(|a| a.as_str()).and_then(parse_addr);
    let proto = protocol.to_ascii_lowercase();
    let plans = [from, to].map(|e| if is_pod(e) { Some(plan(policies, e)) } else { None });
    let sets = |i: usize| plans[i].as_ref().map(member_of).unwrap_or_default();
    let halves = [("egress", 0usize, 1usize, addr("to")), ("ingress", 1, 0, addr("from"))];
    for (dir, me, peer, peer_addr) in halves {
        let half = v.get(dir).unwrap();
        let (action, rule) = match &plans[me] {
            Some(p) => run_plan(p, dir, &sets(peer), peer_addr, &proto, port),
            None => ("allow".to_string(), None),
        };
        let context =
            format!("{} of {} -> {} {}/{} under {}: {}", dir, from, to, protocol, port, policies, v.to_json());
        assert_eq!(s(half, "verdict"), action, "{}", context);
        let half_rule = half.get("rule").map(|r| (s(half, "policy").to_string(), r.as_int().unwrap()));
        assert_eq!(half_rule, rule, "{}", context);
    }
    let both = s(v.get("egress").unwrap(), "verdict") == "allow" && s(v.get("ingress").unwrap(), "verdict") == "allow";
    assert_eq!(s(&v, "verdict"), if both { "allow" } else { "deny" });
    v
}

struct Case {
    name: &'static str,
    policies: &'static str,
    from: &'static str,
    to: &'static str,
    port: u16,
    protocol: &'static str,
    verdict: &'static str,
    reason: &'static str,
}

#[test]
fn verdicts_follow_kubernetes_and_the_extensions_and_agree_with_plans() {
    let cases = [
        Case { name: "no policy", policies: "[]", from: WEB, to: DB, port: 5432, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: no policy selects the pod" },
        Case { name: "default deny ingress",
            policies: r#"[{"name":"deny-all","podSelector":{}}]"#, from: WEB, to: DB, port: 5432, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/deny-all: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "default deny ingress does not touch egress",
            policies: r#"[{"name":"deny-all","podSelector":{}}]"#, from: WEB, to: OUTSIDE, port: 443, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: not a pod" },
        Case { name: "default deny egress",
            policies: r#"[{"name":"no-out","podSelector":{},"policyTypes":["Egress"]}]"#, from: WEB, to: OUTSIDE, port: 443, protocol: "TCP", verdict: "deny",
            reason: "egress: denied by default/no-out: the pod is isolated for egress and no rule allows the flow" },
        Case { name: "egress section implies the Egress type",
            policies: r#"[{"name":"dns-only","podSelector":{"matchLabels":{"app":"web"}},"egress":[{"ports":[{"protocol":"UDP","port":53}]}]}]"#,
            from: WEB, to: OUTSIDE, port: 53, protocol: "UDP", verdict: "allow",
            reason: "egress: allowed by default/dns-only egress rule 0; ingress: not a pod" },
        Case { name: "protocol mismatch",
            policies: r#"[{"name":"dns-only","podSelector":{"matchLabels":{"app":"web"}},"egress":[{"ports":[{"protocol":"UDP","port":53}]}]}]"#,
            from: WEB, to: OUTSIDE, port: 53, protocol: "TCP", verdict: "deny",
            reason: "egress: denied by default/dns-only: the pod is isolated for egress and no rule allows the flow" },
        Case { name: "label selector allows",
            policies: r#"[{"name":"db-from-web","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"web"}}}]}]}]"#,
            from: WEB, to: DB, port: 5432, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/db-from-web ingress rule 0" },
        Case { name: "podSelector alone means the policy's namespace",
            policies: r#"[{"name":"db-from-web","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"web"}}}]}]}]"#,
            from: PROD_WEB, to: DB, port: 5432, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/db-from-web: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "namespaceSelector alone means every pod there",
            policies: r#"[{"name":"from-b","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"b"}}}]}]}]"#,
            from: PROD_API, to: DB, port: 5432, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/from-b ingress rule 0" },
        Case { name: "both selectors are an AND (pod fails)",
            policies: r#"[{"name":"b-web","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"b"}},"podSelector":{"matchLabels":{"app":"web"}}}]}]}]"#,
            from: PROD_API, to: DB, port: 5432, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/b-web: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "both selectors are an AND (namespace fails)",
            policies: r#"[{"name":"b-web","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"b"}},"podSelector":{"matchLabels":{"app":"web"}}}]}]}]"#,
            from: WEB, to: DB, port: 5432, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/b-web: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "both selectors are an AND (both match)",
            policies: r#"[{"name":"b-web","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"b"}},"podSelector":{"matchLabels":{"app":"web"}}}]}]}]"#,
            from: PROD_WEB, to: DB, port: 5432, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/b-web ingress rule 0" },
        Case { name: "ipBlock allows",
            policies: r#"[{"name":"out","podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}}]}]}]"#,
            from: WEB, to: PROD_API, port: 80, protocol: "TCP", verdict: "allow",
            reason: "egress: allowed by default/out egress rule 0; ingress: no policy selects the pod" },
        Case { name: "ipBlock except",
            policies: r#"[{"name":"out","podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}}]}]}]"#,
            from: WEB, to: NEAR, port: 80, protocol: "TCP", verdict: "deny",
            reason: "egress: denied by default/out: the pod is isolated for egress and no rule allows the flow" },
        Case { name: "ipBlock outside",
            policies: r#"[{"name":"out","podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8"}}]}]}]"#,
            from: WEB, to: OUTSIDE, port: 80, protocol: "TCP", verdict: "deny",
            reason: "egress: denied by default/out: the pod is isolated for egress and no rule allows the flow" },
        Case { name: "ipBlock for a sender outside the cluster",
            policies: r#"[{"name":"in","podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"203.0.113.0/24"}}]}]}]"#,
            from: OUTSIDE, to: WEB, port: 80, protocol: "TCP", verdict: "allow",
            reason: "egress: not a pod; ingress: allowed by default/in ingress rule 0" },
        Case { name: "port inside a range",
            policies: r#"[{"name":"range","podSelector":{},"ingress":[{"ports":[{"port":8000,"endPort":8100}]}]}]"#,
            from: WEB, to: DB, port: 8080, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/range ingress rule 0" },
        Case { name: "port outside a range",
            policies: r#"[{"name":"range","podSelector":{},"ingress":[{"ports":[{"port":8000,"endPort":8100}]}]}]"#,
            from: WEB, to: DB, port: 8101, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/range: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "single port",
            policies: r#"[{"name":"p80","podSelector":{},"ingress":[{"ports":[{"protocol":"TCP","port":80}]}]}]"#,
            from: WEB, to: DB, port: 81, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/p80: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "union of allows",
            policies: r#"[{"name":"a","podSelector":{},"ingress":[{"ports":[{"port":80}]}]},{"name":"b","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"ports":[{"port":5432}]}]}]"#,
            from: WEB, to: DB, port: 5432, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/b ingress rule 0" },
        Case { name: "isolated by two policies",
            policies: r#"[{"name":"a","podSelector":{},"ingress":[{"ports":[{"port":80}]}]},{"name":"b","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"ports":[{"port":5432}]}]}]"#,
            from: WEB, to: DB, port: 22, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/a and default/b: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "Deny beats Allow at one level",
            policies: r#"[{"name":"a","podSelector":{},"ingress":[{}]},{"name":"z","podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"web"}}}],"action":"Deny"}]}]"#,
            from: WEB, to: DB, port: 80, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/z ingress rule 0 (Deny)" },
        Case { name: "Deny beats Allow at one priority level",
            policies: r#"[{"name":"a","priority":5,"podSelector":{},"ingress":[{}]},{"name":"z","priority":5,"podSelector":{},"ingress":[{"ports":[{"port":80}]},{"ports":[{"port":80}],"action":"Deny"}]}]"#,
            from: WEB, to: DB, port: 80, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/z ingress rule 1 (priority 5, Deny)" },
        Case { name: "a lower priority number goes first",
            policies: r#"[{"name":"block","priority":10,"podSelector":{},"ingress":[{"action":"Deny"}]},{"name":"let","priority":1,"podSelector":{},"ingress":[{"ports":[{"port":80}]}]}]"#,
            from: WEB, to: DB, port: 80, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/let ingress rule 0 (priority 1, Allow)" },
        Case { name: "the next level decides when the first does not match",
            policies: r#"[{"name":"block","priority":10,"podSelector":{},"ingress":[{"action":"Deny"}]},{"name":"let","priority":1,"podSelector":{},"ingress":[{"ports":[{"port":80}]}]}]"#,
            from: WEB, to: DB, port: 81, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/block ingress rule 0 (priority 10, Deny)" },
        Case { name: "priority policies come before Kubernetes ones",
            policies: r#"[{"name":"deny-all","podSelector":{}},{"name":"let","priority":100,"podSelector":{},"ingress":[{"ports":[{"port":80}]}]}]"#,
            from: WEB, to: DB, port: 80, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/let ingress rule 0 (priority 100, Allow)" },
        Case { name: "priority policies do not isolate",
            policies: r#"[{"name":"let","priority":100,"podSelector":{},"ingress":[{"ports":[{"port":80}]}]}]"#,
            from: WEB, to: DB, port: 22, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: no rule matches the flow and the pod is not isolated for ingress" },
        Case { name: "Kubernetes object form",
            policies: r#"[{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"prod","uid":"x"},"spec":{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["api","x"]}]},"policyTypes":["Ingress"]}}]"#,
            from: WEB, to: PROD_API, port: 80, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by prod/deny: the pod is isolated for ingress and no rule allows the flow" },
        Case { name: "policyTypes without Ingress ignore ingress rules",
            policies: r#"[{"name":"e","podSelector":{},"policyTypes":["Egress"],"ingress":[{"action":"Deny"}],"egress":[{}]}]"#,
            from: WEB, to: DB, port: 80, protocol: "TCP", verdict: "allow",
            reason: "egress: allowed by default/e egress rule 0; ingress: no policy selects the pod" },
        Case { name: "a peer of {} is every pod in every namespace",
            policies: r#"[{"name":"any-pod","podSelector":{},"ingress":[{"from":[{}]}]}]"#,
            from: PROD_API, to: WEB, port: 80, protocol: "TCP", verdict: "allow",
            reason: "egress: no policy selects the pod; ingress: allowed by default/any-pod ingress rule 0" },
        Case { name: "a peer of {} is not an outside address",
            policies: r#"[{"name":"any-pod","podSelector":{},"ingress":[{"from":[{}]}]}]"#,
            from: OUTSIDE, to: WEB, port: 80, protocol: "TCP", verdict: "deny",
            reason: "ingress: denied by default/any-pod: the pod is isolated for ingress and no rule allows the flow" },
    ];
    for c in &cases {
        let v = check_against_plans(c.policies, c.from, c.to, c.port, c.protocol);
        assert_eq!(s(&v, "verdict"), c.verdict, "{}: {}", c.name, v.to_json());
        assert_eq!(s(&v, "reason"), c.reason, "{}: {}", c.name, v.to_json());
    }
}

#[test]
fn verdict_halves_name_the_policy_and_rule() {
    let v = verdict(
        r#"[{"name":"block-db","namespace":"prod","priority":10,"podSelector":{},"ingress":[{},{"action":"Deny","ports":[{"port":80}]}]}]"#,
        WEB,
        PROD_API,
        80,
        "tcp",
    );
    assert_eq!(
        v.get("ingress").unwrap().to_json(),
        r#"{"verdict":"deny","reason":"denied by prod/block-db ingress rule 1 (priority 10, Deny)","policy":"prod/block-db","rule":1,"direction":"ingress"}"#
    );
    assert_eq!(
        v.get("egress").unwrap().to_json(),
        r#"{"verdict":"allow","reason":"no policy selects the pod","direction":"egress"}"#
    );
    assert_eq!(v.get("flow").unwrap().to_json(), r#"{"from":"10.1.0.5","to":"10.2.0.7","protocol":"tcp","port":80}"#);
}

#[test]
fn plans_list_rules_in_evaluation_order_with_named_sets() {
    let policies = r#"[
        {"name":"k8s","podSelector":{"matchLabels":{"app":"web"}},"ingress":[
            {"from":[{"podSelector":{"matchLabels":{"app":"db"}}},{"ipBlock":{"cidr":"10.0.0.1/8","except":["10.1.0.0/16"]}}],"ports":[{"port":80},{"protocol":"UDP"},{"protocol":"SCTP","port":9000,"endPort":9010}]},
            {"action":"Deny","from":[{"namespaceSelector":{"matchLabels":{"team":"a"}},"podSelector":{"matchLabels":{"app":"web"}}}]}]},
        {"name":"p2","priority":2,"podSelector":{},"ingress":[{"action":"Deny","from":[{"ipBlock":{"cidr":"fd00:0::0/16"}}]}]},
        {"name":"p1","priority":1,"podSelector":{},"ingress":[{}],"egress":[{"to":[{"namespaceSelector":{}}]}]},
        {"name":"other","podSelector":{"matchLabels":{"app":"db"}},"ingress":[{"from":[{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["web","api"]}]}}]}]}
    ]"#;
    let p = plan(policies, WEB);
    let ingress: Vec<String> = p
        .get("ingress")
        .unwrap()
        .get("rules")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", s(r, "policy"), r.get("index").unwrap().to_json(), s(r, "action")))
        .collect();
    assert_eq!(ingress, ["default/p1 0 allow", "default/p2 0 deny", "default/k8s 1 deny", "default/k8s 0 allow"]);
    assert_eq!(p.get("ingress").unwrap().get("isolated"), Some(&Value::Bool(true)));
    assert_eq!(p.get("egress").unwrap().get("isolated"), Some(&Value::Bool(false)));
    let k8s0 = &p.get("ingress").unwrap().get("rules").unwrap().as_array().unwrap()[3];
    let db_set = crate::model::PodPeer {
        namespace: Some("default".into()),
        pods: crate::selector::Selector::new(vec![("app".into(), "db".into())], vec![]),
        namespaces: None,
    }
    .set_name();
    assert_eq!(
        k8s0.to_json(),
        format!(
            r#"{{"action":"allow","policy":"default/k8s","index":0,"priority":null,"peers":[{{"set":"{}"}},{{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}}],"ports":[{{"protocol":"tcp","port":80,"endPort":80}},{{"protocol":"udp"}},{{"protocol":"sctp","port":9000,"endPort":9010}}]}}"#,
            db_set
        )
    );
    let p2 = &p.get("ingress").unwrap().get("rules").unwrap().as_array().unwrap()[1];
    assert_eq!(p2.get("peers").unwrap().to_json(), r#"[{"cidr":"fd00::/16","except":[]}]"#);
    assert_eq!(p2.get("priority").unwrap().to_json(), "2");
    let sets = p.get("sets").unwrap();
    assert_eq!(sets.get(&db_set).and_then(|d| d.as_str()), Some("pods with app=db in namespace default"));
    // web-1 is a member of the k8s Deny peer, p1's egress peer and other's In peer, not of the db set.
    let members = member_of(&p);
    assert_eq!(members.len(), 3, "{}", p.to_json());
    assert!(!members.contains(&db_set));
    let descriptions: Vec<&str> = members.iter().map(|m| sets.get(m).unwrap().as_str().unwrap()).collect();
    for want in [
        "pods with app=web in namespaces with team=a",
        "all pods in all namespaces",
        "pods with app in (api, web) in namespace default",
    ] {
        assert!(descriptions.contains(&want), "{:?}", descriptions);
    }
    // The db pod's plan names the same set for the same selector, written differently.
    let db_plan = plan(policies, DB);
    assert!(member_of(&db_plan).contains(&db_set));
    assert!(db_set.len() == 13 && db_set.starts_with('s'));
}

#[test]
fn set_names_depend_on_meaning_only() {
    let a = plan(
        r#"[{"name":"x","podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"a":"1","b":"2"},"matchExpressions":[{"key":"c","operator":"In","values":["y","x"]}]}}]}]}]"#,
        WEB,
    );
    let b = plan(
        r#"[{"name":"y","podSelector":{"matchLabels":{}},"ingress":[{"from":[{"podSelector":{"matchExpressions":[{"operator":"In","key":"c","values":["x","y","x"]}],"matchLabels":{"b":"2","a":"1"}}}]}]}]"#,
        WEB,
    );
    let set = |p: &Value| {
        p.get("ingress").unwrap().get("rules").unwrap().as_array().unwrap()[0].get("peers").unwrap().to_json()
    };
    assert_eq!(set(&a), set(&b));
    let other_ns = plan(
        r#"[{"name":"y","namespace":"prod","podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"a":"1","b":"2"},"matchExpressions":[{"key":"c","operator":"In","values":["y","x"]}]}}]}]}]"#,
        PROD_API,
    );
    assert_ne!(set(&a), set(&other_ns));
    // namespaceSelector alone and with an empty podSelector are the same set.
    let c = plan(
        r#"[{"name":"x","podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"t":"1"}}}]}]}]"#,
        WEB,
    );
    let d = plan(
        r#"[{"name":"x","podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"t":"1"}},"podSelector":{}}]}]}]"#,
        WEB,
    );
    assert_eq!(set(&c), set(&d));
}

fn problems(request: &str) -> Vec<String> {
    let v = ask(request);
    assert_eq!(v.get("ok"), Some(&Value::Bool(false)), "{}", v.to_json());
    v.get("problems").unwrap().as_array().unwrap().iter().map(|p| p.to_json()).collect()
}

fn validate(policies: &str) -> Vec<String> {
    problems(&format!(r#"{{"op":"validate","policies":{}}}"#, policies))
}

#[test]
fn validate_accepts_good_policies() {
    let v = ask(
        r#"{"op":"validate","policies":[{"name":"a","podSelector":{}},{"metadata":{"name":"b"},"spec":{"podSelector":{},"ingress":null,"egress":[{"to":[{"ipBlock":{"cidr":"::/0"}}],"ports":[{"port":53,"protocol":"UDP"}],"action":"Deny"}],"priority":0}}]}"#,
    );
    assert_eq!(v.to_json(), r#"{"ok":true}"#);
}

#[test]
fn validate_names_every_bad_field() {
    let p = |s: &str| format!("{{\"name\":\"p\",\"podSelector\":{{}},{}}}", s);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(r#"[{},{},{}]"#, p(r#""namespace":"n1","ingress":[]"#), p(r#""namespace":"n2","egress":[]"#), p(r#""namespace":"x","ingress":[{"ports":[{"port":1},{"port":8080,"endPort":80}]}]"#)),
            vec![r#"{"path":"policies[2].ingress[0].ports[1].endPort","message":"is less than port 8080","value":80}"#],
        ),
        (format!("[{}]", p(r#""ingress":[{"ports":[{"endPort":80}]}]"#)), vec![r#"{"path":"policies[0].ingress[0].ports[0].endPort","message":"is set without port","value":80}"#]),
        (format!("[{}]", p(r#""ingress":[{"ports":[{"port":"http"}]}]"#)), vec![r#"{"path":"policies[0].ingress[0].ports[0].port","message":"is a named port, which is not supported: use a port number","value":"http"}"#]),
        (format!("[{}]", p(r#""ingress":[{"ports":[{"port":0},{"port":65536},{"port":1.5}]}]"#)), vec![
            r#"{"path":"policies[0].ingress[0].ports[0].port","message":"must be an integer from 1 to 65535","value":0}"#,
            r#"{"path":"policies[0].ingress[0].ports[1].port","message":"must be an integer from 1 to 65535","value":65536}"#,
            r#"{"path":"policies[0].ingress[0].ports[2].port","message":"must be an integer from 1 to 65535","value":1.5}"#,
        ]),
        (format!("[{}]", p(r#""egress":[{"ports":[{"protocol":"ICMP"}]}]"#)), vec![r#"{"path":"policies[0].egress[0].ports[0].protocol","message":"must be TCP, UDP or SCTP","value":"ICMP"}"#]),
        (format!("[{}]", p(r#""egress":[{"action":"allow"}]"#)), vec![r#"{"path":"policies[0].egress[0].action","message":"must be Allow or Deny","value":"allow"}"#]),
        (format!("[{}]", p(r#""priority":-1"#)), vec![r#"{"path":"policies[0].priority","message":"must be a non-negative integer no greater than 2147483647","value":-1}"#]),
        (format!("[{}]", p(r#""priority":"1""#)), vec![r#"{"path":"policies[0].priority","message":"must be a non-negative integer no greater than 2147483647","value":"1"}"#]),
        (format!("[{}]", p(r#""policyTypes":["Ingress","egress"]"#)), vec![r#"{"path":"policies[0].policyTypes[1]","message":"must be Ingress or Egress","value":"egress"}"#]),
        (r#"[{"podSelector":{}}]"#.to_string(), vec![r#"{"path":"policies[0].name","message":"is required"}"#]),
        (r#"[{"name":"x"}]"#.to_string(), vec![r#"{"path":"policies[0].podSelector","message":"is required: use {} to select every pod in the namespace"}"#]),
        (r#"[{"metadata":{},"spec":{"podSelector":{}}}]"#.to_string(), vec![r#"{"path":"policies[0].metadata.name","message":"is required"}"#]),
        (r#"[{"metadata":{"name":"a"},"spec":{"podSelector":[],"ingres":[]}}]"#.to_string(), vec![
            r#"{"path":"policies[0].spec.ingres","message":"is not a known field"}"#,
            r#"{"path":"policies[0].spec.podSelector","message":"must be an object","value":[]}"#,
        ]),
        (r#"[{"name":"x","podSelector":{"matchExpressions":[{"key":"a","operator":"Is"},{"key":"b","operator":"In"},{"key":"c","operator":"NotIn","values":[]},{"key":"d","operator":"Exists","values":["x"]},{"key":"e","operator":"DoesNotExist"}]}}]"#.to_string(), vec![
            r#"{"path":"policies[0].podSelector.matchExpressions[0].operator","message":"is not a known operator: use In, NotIn, Exists or DoesNotExist","value":"Is"}"#,
            r#"{"path":"policies[0].podSelector.matchExpressions[1].values","message":"must not be empty for operator In"}"#,
            r#"{"path":"policies[0].podSelector.matchExpressions[2].values","message":"must not be empty for operator NotIn","value":[]}"#,
            r#"{"path":"policies[0].podSelector.matchExpressions[3].values","message":"must be empty for operator Exists","value":["x"]}"#,
        ]),
        (r#"[{"name":"x","podSelector":{"matchLabels":{"kubernetes.io/name":1}}}]"#.to_string(), vec![r#"{"path":"policies[0].podSelector.matchLabels[\"kubernetes.io/name\"]","message":"must be a string","value":1}"#]),
        (format!("[{}]", p(r#""ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/33","except":["10.1.0.0/16"]}},{"ipBlock":{"cidr":"10.0.0.0/8","except":["11.0.0.0/16","10.0.0.0/8","fd00::/64","x"]}},{"ipBlock":{}}]}]"#)), vec![
            r#"{"path":"policies[0].ingress[0].from[0].ipBlock.cidr","message":"is not a CIDR block: the prefix length must be 0 to 32","value":"10.0.0.0/33"}"#,
            r#"{"path":"policies[0].ingress[0].from[1].ipBlock.except[0]","message":"is not a strict subset of cidr 10.0.0.0/8","value":"11.0.0.0/16"}"#,
            r#"{"path":"policies[0].ingress[0].from[1].ipBlock.except[1]","message":"is not a strict subset of cidr 10.0.0.0/8","value":"10.0.0.0/8"}"#,
            r#"{"path":"policies[0].ingress[0].from[1].ipBlock.except[2]","message":"is not a strict subset of cidr 10.0.0.0/8","value":"fd00::/64"}"#,
            r#"{"path":"policies[0].ingress[0].from[1].ipBlock.except[3]","message":"is not a CIDR block: the prefix length is missing","value":"x"}"#,
            r#"{"path":"policies[0].ingress[0].from[2].ipBlock.cidr","message":"is required"}"#,
        ]),
        (format!("[{}]", p(r#""ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8"},"podSelector":{}}]}]"#)), vec![r#"{"path":"policies[0].ingress[0].from[0]","message":"sets ipBlock together with podSelector or namespaceSelector"}"#]),
        (format!("[{}]", p(r#""ingress":{},"egress":[{"from":[]}]"#)), vec![
            r#"{"path":"policies[0].ingress","message":"must be an array","value":{}}"#,
            r#"{"path":"policies[0].egress[0].from","message":"is not a known field"}"#,
        ]),
        (format!("[{},{}]", p(r#""namespace":"a""#), p(r#""namespace":"a""#)), vec![r#"{"path":"policies[1]","message":"has the same namespace and name as policies[0]: a/p"}"#]),
        (r#"[3]"#.to_string(), vec![r#"{"path":"policies[0]","message":"must be an object","value":3}"#]),
        (r#"{}"#.to_string(), vec![r#"{"path":"policies","message":"must be an array","value":{}}"#]),
        (r#"[{"kind":"Pod","metadata":{"name":"a"},"spec":{"podSelector":{}}}]"#.to_string(), vec![r#"{"path":"policies[0].kind","message":"must be NetworkPolicy","value":"Pod"}"#]),
    ];
    for (policies, want) in &cases {
        assert_eq!(&validate(policies), want, "{}", policies);
    }
}

#[test]
fn bad_requests_get_problems_not_traps() {
    let cases: Vec<(&[u8], Vec<&str>)> = vec![
        (b"\xff", vec![r#"{"path":"","message":"is not UTF-8: invalid byte at 0"}"#]),
        (b"", vec![r#"{"path":"","message":"is not valid JSON: unexpected end of input"}"#]),
        (b"[]", vec![r#"{"path":"","message":"must be an object","value":[]}"#]),
        (b"{}", vec![r#"{"path":"op","message":"is required"}"#]),
        (br#"{"op":"explain"}"#, vec![r#"{"path":"op","message":"is not a known operation: use validate, load, unload, plan or verdict","value":"explain"}"#]),
        (br#"{"op":"plan","policies":[],"pod":{"labels":{"a":1},"addresses":["10.0.0.300"]},"x":1}"#, vec![
            r#"{"path":"x","message":"is not a known field"}"#,
            r#"{"path":"pod.labels.a","message":"must be a string","value":1}"#,
            r#"{"path":"pod.addresses[0]","message":"is not an IP address","value":"10.0.0.300"}"#,
        ]),
        (br#"{"op":"verdict","policies":[],"from":{"address":"1.2.3.4","name":"x"},"to":{"address":"x"},"port":0,"protocol":"icmp"}"#, vec![
            r#"{"path":"from.address","message":"is for endpoints that are not pods: a pod lists its addresses in addresses","value":"1.2.3.4"}"#,
            r#"{"path":"to.address","message":"is not an IP address","value":"x"}"#,
            r#"{"path":"port","message":"must be an integer from 1 to 65535","value":0}"#,
            r#"{"path":"protocol","message":"must be TCP, UDP or SCTP","value":"icmp"}"#,
        ]),
        (br#"{"op":"verdict","policies":[]}"#, vec![
            r#"{"path":"from","message":"is required"}"#,
            r#"{"path":"to","message":"is required"}"#,
            r#"{"path":"port","message":"is required"}"#,
        ]),
    ];
    for (request, want) in &cases {
        let text = handle(request);
        let v = parse(&text).unwrap();
        let got: Vec<String> = v.get("problems").unwrap().as_array().unwrap().iter().map(|p| p.to_json()).collect();
        assert_eq!(&got, want, "{}", String::from_utf8_lossy(request));
    }
    // Deep nesting and odd bytes still answer.
    let deep = format!(r#"{{"op":"validate","policies":{}}}"#, "[".repeat(10_000));
    assert!(handle(deep.as_bytes()).starts_with(r#"{"ok":false"#));
}

/// A small deterministic generator (xorshift64*), so that failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn random_selector(r: &mut Rng, keys: &[&str], values: &[&str]) -> String {
    let mut labels = Vec::new();
    let mut exprs = Vec::new();
    for key in keys {
        match r.below(6) {
            0 => labels.push(format!(r#""{}":"{}""#, key, r.pick(values))),
            1 => exprs.push(format!(
                r#"{{"key":"{}","operator":"In","values":["{}","{}"]}}"#,
                key,
                r.pick(values),
                r.pick(values)
            )),
            2 => exprs.push(format!(r#"{{"key":"{}","operator":"NotIn","values":["{}"]}}"#, key, r.pick(values))),
            3 => exprs.push(format!(r#"{{"key":"{}","operator":"{}"}}"#, key, r.pick(&["Exists", "DoesNotExist"]))),
            _ => {}
        }
    }
    format!(r#"{{"matchLabels":{{{}}},"matchExpressions":[{}]}}"#, labels.join(","), exprs.join(","))
}

fn random_rules(r: &mut Rng, peers_key: &str) -> String {
    let mut rules = Vec::new();
    for _ in 0..r.below(3) {
        let mut fields = Vec::new();
        if r.chance(70) {
            let mut peers = Vec::new();
            for _ in 0..r.below(3) {
                peers.push(match r.below(6) {
                    0 => format!(r#"{{"podSelector":{}}}"#, random_selector(r, &["app"], &["web", "db", "api"])),
                    1 => format!(r#"{{"namespaceSelector":{}}}"#, random_selector(r, &["team"], &["a", "b"])),
                    2 => format!(
                        r#"{{"namespaceSelector":{},"podSelector":{}}}"#,
                        random_selector(r, &["team"], &["a", "b"]),
                        random_selector(r, &["app", "tier"], &["web", "db", "front"])
                    ),
                    3 => format!(
                        r#"{{"ipBlock":{{"cidr":"{}","except":[{}]}}}}"#,
                        r.pick(&["10.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0", "203.0.113.0/24", "fd00::/8"]),
                        if r.chance(50) { r#""10.1.0.0/24""# } else { "" }
                    ),
                    4 => "{}".to_string(),
                    _ => r#"{"podSelector":{}}"#.to_string(),
                });
            }
            // Drop except blocks that fall outside their cidr (validation refuses them).
            let peers: Vec<String> = peers
                .into_iter()
                .map(|p| {
                    if p.contains(r#""10.1.0.0/16","except":["10.1.0.0/24"]"#)
                        || p.contains("0.0.0.0/0")
                        || p.contains("10.0.0.0/8")
                    {
                        p
                    } else {
                        p.replace(r#""10.1.0.0/24""#, "")
                    }
                })
                .collect();
            fields.push(format!(r#""{}":[{}]"#, peers_key, peers.join(",")));
        }
        if r.chance(60) {
            let mut ports = Vec::new();
            for _ in 0..r.below(3) {
                let proto = r.pick(&["", r#""protocol":"TCP","#, r#""protocol":"UDP","#]);
                ports.push(match r.below(3) {
                    0 => format!("{{{}\"port\":{}}}", proto, r.pick(&["80", "443", "53"])),
                    1 => format!("{{{}\"port\":8000,\"endPort\":{}}}", proto, r.pick(&["8080", "8100"])),
                    _ => format!("{{{}}}", proto.trim_end_matches(',')),
                });
            }
            fields.push(format!(r#""ports":[{}]"#, ports.join(",")));
        }
        if r.chance(35) {
            fields.push(format!(r#""action":"{}""#, r.pick(&["Allow", "Deny"])));
        }
        rules.push(format!("{{{}}}", fields.join(",")));
    }
    format!("[{}]", rules.join(","))
}

fn random_policies(r: &mut Rng) -> String {
    let mut out = Vec::new();
    for i in 0..1 + r.below(4) {
        let mut fields = vec![
            format!(r#""name":"p{}""#, i),
            format!(r#""namespace":"{}""#, r.pick(&["default", "prod"])),
            format!(r#""podSelector":{}"#, random_selector(r, &["app"], &["web", "db", "api"])),
        ];
        if r.chance(40) {
            fields.push(format!(r#""priority":{}"#, r.below(3)));
        }
        match r.below(4) {
            0 => fields.push(r#""policyTypes":["Ingress"]"#.to_string()),
            1 => fields.push(r#""policyTypes":["Egress"]"#.to_string()),
            2 => fields.push(r#""policyTypes":["Ingress","Egress"]"#.to_string()),
            _ => {}
        }
        if r.chance(70) {
            fields.push(format!(r#""ingress":{}"#, random_rules(r, "from")));
        }
        if r.chance(50) {
            fields.push(format!(r#""egress":{}"#, random_rules(r, "to")));
        }
        out.push(format!("{{{}}}", fields.join(",")));
    }
    format!("[{}]", out.join(","))
}

#[test]
fn verdicts_agree_with_plans_on_random_cases() {
    let seed: u64 = 0x5eed_c0de_2026;
    println!("seed {:#x}", seed);
    let mut r = Rng(seed);
    let endpoints = [
        WEB,
        DB,
        PROD_API,
        PROD_WEB,
        OUTSIDE,
        NEAR,
        r#"{"namespace":"default","name":"front-1","labels":{"app":"web","tier":"front"},"addresses":["10.1.0.9"]}"#,
        r#"{"namespace":"prod","name":"v6","labels":{"app":"db"},"namespaceLabels":{"team":"a"},"addresses":["fd00::7"]}"#,
        r#"{"address":"10.1.0.77"}"#,
        r#"{"address":"fd00::1:2"}"#,
    ];
    let (mut allowed, mut denied) = (0, 0);
    for _ in 0..400 {
        let policies = random_policies(&mut r);
        let v = ask(&format!(r#"{{"op":"validate","policies":{}}}"#, policies));
        assert_eq!(v.to_json(), r#"{"ok":true}"#, "{}", policies);
        for _ in 0..6 {
            let from = endpoints[r.below(endpoints.len())];
            let to = endpoints[r.below(endpoints.len())];
            let port = [80u16, 443, 53, 8080, 8081, 8100][r.below(6)];
            let protocol = ["TCP", "UDP"][r.below(2)];
            let v = check_against_plans(&policies, from, to, port, protocol);
            if s(&v, "verdict") == "allow" {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    // The generator must exercise both outcomes, or the check proves little.
    assert!(allowed > 300 && denied > 300, "allowed {} denied {}", allowed, denied);
}

/// The semantics as the design states them, written level by level and
/// independently of the engine's single ordered list: the first priority
/// level (lowest number first) with a matching rule decides, Deny beating
/// Allow; then the policies without priority, where a matching Deny wins,
/// then any matching Allow (the union), then isolation decides.
fn oracle(
    policies: &[crate::model::Policy],
    pod: &crate::model::Identity,
    dir: crate::model::Dir,
    flow: &crate::engine::Flow,
) -> &'static str {
    use crate::model::Action;
    let mine: Vec<_> = policies.iter().filter(|p| p.has(dir) && p.selects(pod)).collect();
    let mut levels: Vec<Option<u32>> = mine.iter().map(|p| p.priority).collect();
    levels.sort_by_key(|l| (l.is_none(), *l));
    levels.dedup();
    for level in levels {
        let matching: Vec<Action> = mine
            .iter()
            .filter(|p| p.priority == level)
            .flat_map(|p| p.rules(dir).iter())
            .filter(|r| crate::engine::rule_matches(r, flow))
            .map(|r| r.action)
            .collect();
        if matching.contains(&Action::Deny) {
            return "deny";
        }
        if !matching.is_empty() {
            return "allow";
        }
    }
    if mine.iter().any(|p| p.priority.is_none()) {
        "deny"
    } else {
        "allow"
    }
}

#[test]
fn verdicts_agree_with_the_level_by_level_semantics() {
    use crate::model::{read_endpoint, read_policies, Dir, Endpoint, Problems, Proto};
    let seed: u64 = 0x0dd_ba11_2026;
    println!("seed {:#x}", seed);
    let mut r = Rng(seed);
    let endpoints: Vec<Endpoint> = [WEB, DB, PROD_API, PROD_WEB, OUTSIDE, NEAR]
        .iter()
        .map(|e| read_endpoint(&mut Problems::default(), "e", Some(&parse(e).unwrap())).unwrap())
        .collect();
    let texts = [WEB, DB, PROD_API, PROD_WEB, OUTSIDE, NEAR];
    for _ in 0..300 {
        let text = random_policies(&mut r);
        let mut p = Problems::default();
        let policies = read_policies(&mut p, Some(&parse(&text).unwrap()));
        assert!(p.is_empty());
        for _ in 0..6 {
            let (i, j) = (r.below(endpoints.len()), r.below(endpoints.len()));
            let port = [80u16, 443, 53, 8080, 8081][r.below(5)];
            let protocol = ["TCP", "UDP"][r.below(2)];
            let proto = Proto::parse(protocol).unwrap();
            let v = verdict(&text, texts[i], texts[j], port, protocol);
            let (src, dst) = crate::engine::flow_addresses(&endpoints[i], &endpoints[j]);
            let want_egress = match &endpoints[i] {
                Endpoint::Pod(id) => oracle(
                    &policies,
                    id,
                    Dir::Egress,
                    &crate::engine::Flow { peer: &endpoints[j], peer_address: dst, protocol: proto, port },
                ),
                Endpoint::Address(_) => "allow",
            };
            let want_ingress = match &endpoints[j] {
                Endpoint::Pod(id) => oracle(
                    &policies,
                    id,
                    Dir::Ingress,
                    &crate::engine::Flow { peer: &endpoints[i], peer_address: src, protocol: proto, port },
                ),
                Endpoint::Address(_) => "allow",
            };
            assert_eq!(s(v.get("egress").unwrap(), "verdict"), want_egress, "{} {}", text, v.to_json());
            assert_eq!(s(v.get("ingress").unwrap(), "verdict"), want_ingress, "{} {}", text, v.to_json());
        }
    }
}

/// Loads `policies` and returns the handle the answer names.
fn load(policies: &str) -> String {
    let answer = handle(format!(r#"{{"op":"load","policies":{}}}"#, policies).as_bytes());
    let v = parse(&answer).unwrap();
    let n = v.get("handle").and_then(|h| h.as_int()).unwrap_or_else(|| panic!("load failed: {}", answer));
    assert_eq!(answer, format!(r#"{{"ok":true,"handle":{}}}"#, n));
    n.to_string()
}

/// Asks `request` (which holds `POLICIES` where the policy set goes) once
/// with the policies inline and once with the handle, and wants the same bytes.
fn same_inline_and_loaded(policies: &str, handle_number: &str, request: &str) -> String {
    let inline = handle(request.replace("POLICIES", &format!(r#""policies":{}"#, policies)).as_bytes());
    let loaded = handle(request.replace("POLICIES", &format!(r#""handle":{}"#, handle_number)).as_bytes());
    assert_eq!(inline, loaded, "{} with {}", request, policies);
    inline
}

#[test]
fn loaded_policy_sets_answer_byte_for_byte_as_inline_ones() {
    let fixed = [
        r#"[]"#,
        r#"[{"name":"deny-all","podSelector":{}}]"#,
        r#"[{"name":"web","podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Ingress","Egress"],
            "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"db"}}},{"ipBlock":{"cidr":"10.9.0.0/16","except":["10.9.1.0/24"]}}],"ports":[{"port":80},{"protocol":"UDP","port":53,"endPort":60}]}],
            "egress":[{"to":[{"namespaceSelector":{"matchLabels":{"team":"b"}}}]},{"action":"Deny","to":[{"ipBlock":{"cidr":"203.0.113.0/24"}}]}]},
           {"name":"db","podSelector":{"matchLabels":{"app":"db"}},"priority":1,"ingress":[{"action":"Deny","from":[{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["web"]}]}}],"ports":[{"port":5432}]},{"from":[{}]}]},
           {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"api","namespace":"prod"},"spec":{"podSelector":{},"priority":0,"egress":[{"to":[{"podSelector":{"matchLabels":{"app":"web"}},"namespaceSelector":{}}]}]}}]"#,
    ];
    let endpoints = [WEB, DB, PROD_API, PROD_WEB, OUTSIDE, NEAR];
    let mut answers = 0;
    for policies in fixed {
        let n = load(policies);
        for from in endpoints {
            if is_pod(from) {
                same_inline_and_loaded(policies, &n, &format!(r#"{{"op":"plan",POLICIES,"pod":{}}}"#, from));
            }
            for to in endpoints {
                for (port, protocol) in [(80, "TCP"), (53, "udp"), (5432, "TCP"), (443, "SCTP")] {
                    let request = format!(
                        r#"{{"op":"verdict",POLICIES,"from":{},"to":{},"port":{},"protocol":"{}"}}"#,
                        from, to, port, protocol
                    );
                    assert!(same_inline_and_loaded(policies, &n, &request).starts_with(r#"{"ok":true"#));
                    answers += 1;
                }
            }
        }
        // The rest of a request is still checked the same way, problems and all.
        for request in [
            r#"{"op":"plan",POLICIES,"pod":{"labels":{"a":1},"addresses":["10.0.0.300"]},"x":1}"#,
            r#"{"op":"plan",POLICIES}"#,
            r#"{"op":"verdict",POLICIES,"from":{"address":"1.2.3.4","name":"x"},"to":{"address":"x"},"port":0,"protocol":"icmp"}"#,
            r#"{"op":"verdict",POLICIES,"from":{},"to":{},"port":80,"protocol":"tcp"}"#,
        ] {
            assert!(same_inline_and_loaded(policies, &n, request).starts_with(r#"{"ok":"#));
        }
    }
    // Random sets, one handle each (older ones are evicted as we go).
    let mut r = Rng(0x10ad_ed5e_7500);
    let all = [WEB, DB, PROD_API, PROD_WEB, OUTSIDE, NEAR, r#"{"address":"fd00::1:2"}"#];
    for _ in 0..200 {
        let policies = random_policies(&mut r);
        let n = load(&policies);
        let pod = [WEB, DB, PROD_API, PROD_WEB][r.below(4)];
        same_inline_and_loaded(&policies, &n, &format!(r#"{{"op":"plan",POLICIES,"pod":{}}}"#, pod));
        for _ in 0..4 {
            let (from, to) = (all[r.below(all.len())], all[r.below(all.len())]);
            let port = [80u16, 443, 53, 8080][r.below(4)];
            let request = format!(r#"{{"op":"verdict",POLICIES,"from":{},"to":{},"port":{}}}"#, from, to, port);
            same_inline_and_loaded(&policies, &n, &request);
            answers += 1;
        }
    }
    assert!(answers > 1000);
}

#[test]
fn a_large_loaded_set_answers_as_inline() {
    // The benchmark's shape: many policies, one verdict or plan at a time.
    let policies: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"name":"p{}","namespace":"{}","podSelector":{{"matchLabels":{{"app":"{}"}}}},"priority":{},"ingress":[{{"from":[{{"podSelector":{{"matchLabels":{{"app":"a{}"}}}}}}],"ports":[{{"port":{}}}]}}]}}"#,
                i,
                ["default", "prod"][i % 2],
                ["web", "db", "api"][i % 3],
                i % 7,
                i % 11,
                1000 + i
            )
        })
        .collect();
    let policies = format!("[{}]", policies.join(","));
    let n = load(&policies);
    for pod in [WEB, DB, PROD_API] {
        same_inline_and_loaded(&policies, &n, &format!(r#"{{"op":"plan",POLICIES,"pod":{}}}"#, pod));
    }
    let request = format!(r#"{{"op":"verdict",POLICIES,"from":{},"to":{},"port":1002}}"#, PROD_API, DB);
    same_inline_and_loaded(&policies, &n, &request);
}

#[test]
fn load_unload_and_handle_problems() {
    let ok = r#"[{"name":"deny-all","podSelector":{}}]"#;
    let verdict_with = |h: &str| {
        handle(format!(r#"{{"op":"verdict","handle":{},"from":{},"to":{},"port":80}}"#, h, WEB, DB).as_bytes())
    };
    // Loading validates exactly as validate does, and hands out no handle then.
    let bad = r#"[{"name":"a","podSelector":{},"ingress":[{"ports":[{"port":0}]}]},{"name":"a","podSelector":{}}]"#;
    let validated = handle(format!(r#"{{"op":"validate","policies":{}}}"#, bad).as_bytes());
    assert_eq!(handle(format!(r#"{{"op":"load","policies":{}}}"#, bad).as_bytes()), validated);
    assert!(validated.starts_with(r#"{"ok":false,"problems":[{"path":"policies[0].ingress[0].ports[0].port""#));
    // Handles are new on every load, even of the same policies.
    let first: i64 = load(ok).parse().unwrap();
    let second: i64 = load(ok).parse().unwrap();
    assert_eq!(second, first + 1);
    assert!(verdict_with(&first.to_string()).starts_with(r#"{"ok":true,"verdict":"deny""#));
    // Only the last MAX_LOADED sets are kept: the oldest handle goes.
    let mut handles = vec![first, second];
    for _ in 0..crate::MAX_LOADED - 1 {
        handles.push(load(ok).parse().unwrap());
    }
    let unknown = |h: &str| {
        format!(r#"{{"ok":false,"problems":[{{"path":"handle","message":"is not a loaded policy set","value":{}}}]}}"#, h)
    };
    assert_eq!(verdict_with(&first.to_string()), unknown(&first.to_string()));
    for h in &handles[1..] {
        assert!(verdict_with(&h.to_string()).starts_with(r#"{"ok":true"#), "handle {}", h);
    }
    // unload frees a set; its handle is then unknown, to unload as well.
    let last = handles.last().unwrap().to_string();
    assert_eq!(handle(format!(r#"{{"op":"unload","handle":{}}}"#, last).as_bytes()), r#"{"ok":true}"#);
    assert_eq!(verdict_with(&last), unknown(&last));
    assert_eq!(handle(format!(r#"{{"op":"unload","handle":{}}}"#, last).as_bytes()), unknown(&last));
    assert!(verdict_with(&handles[1].to_string()).starts_with(r#"{"ok":true"#));
    // Handles that never were, and requests that are malformed.
    assert_eq!(verdict_with("0"), unknown("0"));
    assert_eq!(verdict_with("-3"), unknown("-3"));
    assert_eq!(verdict_with("999999"), unknown("999999"));
    let h = handles[1];
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!(r#"{{"op":"plan","handle":"{}","pod":{}}}"#, h, WEB), vec![
            r#"{"path":"handle","message":"must be an integer: a handle that load answered","value":"HANDLE"}"#,
        ]),
        (format!(r#"{{"op":"plan","handle":1.5,"pod":{}}}"#, WEB), vec![
            r#"{"path":"handle","message":"must be an integer: a handle that load answered","value":1.5}"#,
        ]),
        (format!(r#"{{"op":"plan","policies":[],"handle":{},"pod":{}}}"#, h, WEB), vec![
            r#"{"path":"handle","message":"cannot be given together with policies: give one of them","value":HANDLE}"#,
        ]),
        (format!(r#"{{"op":"plan","pod":{}}}"#, WEB), vec![
            r#"{"path":"policies","message":"is required unless handle names a loaded policy set"}"#,
        ]),
        (format!(r#"{{"op":"verdict","handle":77777,"to":{},"port":80}}"#, DB), vec![
            r#"{"path":"handle","message":"is not a loaded policy set","value":77777}"#,
            r#"{"path":"from","message":"is required"}"#,
        ]),
        (format!(r#"{{"op":"load","policies":[],"handle":{}}}"#, h), vec![r#"{"path":"handle","message":"is not a known field"}"#]),
        (r#"{"op":"load"}"#.to_string(), vec![r#"{"path":"policies","message":"is required"}"#]),
        (r#"{"op":"unload"}"#.to_string(), vec![r#"{"path":"handle","message":"is required"}"#]),
        (format!(r#"{{"op":"unload","handle":{},"policies":[]}}"#, h), vec![r#"{"path":"policies","message":"is not a known field"}"#]),
        (format!(r#"{{"op":"validate","policies":[],"handle":{}}}"#, h), vec![r#"{"path":"handle","message":"is not a known field"}"#]),
    ];
    for (request, want) in &cases {
        let v = parse(&handle(request.as_bytes())).unwrap();
        let got: Vec<String> = v.get("problems").unwrap().as_array().unwrap().iter().map(|p| p.to_json()).collect();
        let want: Vec<String> = want.iter().map(|w| w.replace("HANDLE", &h.to_string())).collect();
        assert_eq!(got, want, "{}", request);
    }
    // None of those problems touched the loaded set.
    assert!(verdict_with(&h.to_string()).starts_with(r#"{"ok":true"#));
}
