//! The policy model and its reader. Reading is validation: every problem is
//! collected with the path of the field at fault, so one answer names them all.

use crate::ip::{parse_addr, parse_cidr, Addr, Cidr};
use crate::json::{obj, quote, Value};
use crate::selector::{Expr, Labels, Op, Selector};

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    pub value: Option<Value>,
}

impl Problem {
    pub fn to_value(&self) -> Value {
        let mut fields = vec![("path", self.path.as_str().into()), ("message", self.message.as_str().into())];
        if let Some(v) = &self.value {
            fields.push(("value", v.clone()));
        }
        obj(fields)
    }
}

#[derive(Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, path: &str, message: impl Into<String>, value: Option<&Value>) {
        self.0.push(Problem { path: path.to_string(), message: message.into(), value: value.cloned() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `base.key`, or `base["key"]` when the key is not a plain identifier
/// (label keys such as `kubernetes.io/metadata.name`).
pub fn key_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.bytes().enumerate().all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    match (plain, base.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{}.{}", base, key),
        (false, _) => format!("{}[{}]", base, quote(key)),
    }
}

fn index_path(base: &str, i: usize) -> String {
    format!("{}[{}]", base, i)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Deny,
    Allow,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PortRange {
    pub proto: Proto,
    /// First and last port, both included; `None` is every port.
    pub range: Option<(u16, u16)>,
}

impl PortRange {
    pub fn matches(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && self.range.map_or(true, |(lo, hi)| lo <= port && port <= hi)
    }
}

/// A peer chosen by labels: it becomes a named set of pod addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPeer {
    /// The policy's namespace when there is no namespace selector.
    pub namespace: Option<String>,
    pub pods: Selector,
    pub namespaces: Option<Selector>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Peer {
    Pods(PodPeer),
    Block { cidr: Cidr, except: Vec<Cidr> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub action: Action,
    /// Empty: every peer.
    pub peers: Vec<Peer>,
    /// Empty: every port of every protocol.
    pub ports: Vec<PortRange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub priority: Option<u32>,
    pub pod_selector: Selector,
    pub has_ingress: bool,
    pub has_egress: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl Policy {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn has(&self, dir: Dir) -> bool {
        match dir {
            Dir::Ingress => self.has_ingress,
            Dir::Egress => self.has_egress,
        }
    }

    pub fn rules(&self, dir: Dir) -> &[Rule] {
        match dir {
            Dir::Ingress => &self.ingress,
            Dir::Egress => &self.egress,
        }
    }

    pub fn selects(&self, pod: &Identity) -> bool {
        pod.namespace == self.namespace && self.pod_selector.matches(&pod.labels)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub namespace: String,
    pub name: Option<String>,
    pub labels: Labels,
    pub namespace_labels: Labels,
    pub addresses: Vec<Addr>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    Pod(Identity),
    Address(Addr),
}

impl Endpoint {
    pub fn addresses(&self) -> Vec<Addr> {
        match self {
            Endpoint::Pod(p) => p.addresses.clone(),
            Endpoint::Address(a) => vec![*a],
        }
    }
}

/// Reports every field of an object that is not in `known`.
fn unknown_fields(p: &mut Problems, path: &str, fields: &[(String, Value)], known: &[&str]) {
    for (k, _) in fields {
        if !known.contains(&k.as_str()) {
            p.add(&key_path(path, k), "is not a known field", None);
        }
    }
}

fn want_object<'a>(p: &mut Problems, path: &str, v: &'a Value) -> Option<&'a [(String, Value)]> {
    let o = v.as_object();
    if o.is_none() {
        p.add(path, "must be an object", Some(v));
    }
    o
}

fn want_array<'a>(p: &mut Problems, path: &str, v: &'a Value) -> Option<&'a [Value]> {
    let a = v.as_array();
    if a.is_none() {
        p.add(path, "must be an array", Some(v));
    }
    a
}

fn want_string<'a>(p: &mut Problems, path: &str, v: &'a Value) -> Option<&'a str> {
    let s = v.as_str();
    if s.is_none() {
        p.add(path, "must be a string", Some(v));
    }
    s
}

pub fn read_labels(p: &mut Problems, path: &str, v: &Value) -> Labels {
    let mut out = Labels::new();
    if let Some(fields) = want_object(p, path, v) {
        for (k, val) in fields {
            if let Some(s) = want_string(p, &key_path(path, k), val) {
                out.push((k.clone(), s.to_string()));
            }
        }
    }
    out.sort();
    out
}

pub fn read_selector(p: &mut Problems, path: &str, v: &Value) -> Selector {
    let fields = match want_object(p, path, v) {
        Some(f) => f,
        None => return Selector::default(),
    };
    unknown_fields(p, path, fields, &["matchLabels", "matchExpressions"]);
    let labels = match v.get("matchLabels") {
        Some(l) => read_labels(p, &key_path(path, "matchLabels"), l),
        None => Labels::new(),
    };
    let mut exprs = Vec::new();
    let list_path = key_path(path, "matchExpressions");
    if let Some(list) = v.get("matchExpressions").and_then(|l| want_array(p, &list_path, l)) {
        for (i, e) in list.iter().enumerate() {
            let ep = index_path(&list_path, i);
            let ef = match want_object(p, &ep, e) {
                Some(f) => f,
                None => continue,
            };
            unknown_fields(p, &ep, ef, &["key", "operator", "values"]);
            let key = match e.get("key") {
                Some(k) => want_string(p, &key_path(&ep, "key"), k).map(str::to_string),
                None => {
                    p.add(&key_path(&ep, "key"), "is required", None);
                    None
                }
            };
            if let Some("") = key.as_deref() {
                p.add(&key_path(&ep, "key"), "must not be empty", e.get("key"));
            }
            let op = match e.get("operator") {
                Some(o) => want_string(p, &key_path(&ep, "operator"), o).and_then(|s| {
                    let op = Op::parse(s);
                    if op.is_none() {
                        p.add(
                            &key_path(&ep, "operator"),
                            "is not a known operator: use In, NotIn, Exists or DoesNotExist",
                            Some(o),
                        );
                    }
                    op
                }),
                None => {
                    p.add(&key_path(&ep, "operator"), "is required", None);
                    None
                }
            };
            let vp = key_path(&ep, "values");
            let mut values = Vec::new();
            if let Some(vs) = e.get("values").and_then(|vs| want_array(p, &vp, vs)) {
                for (j, s) in vs.iter().enumerate() {
                    if let Some(s) = want_string(p, &index_path(&vp, j), s) {
                        values.push(s.to_string());
                    }
                }
            }
            let raw = e.get("values").map(|v| v.as_array().map(|a| a.len()));
            match op {
                Some(op @ (Op::In | Op::NotIn)) if matches!(raw, None | Some(Some(0))) => {
                    p.add(&vp, format!("must not be empty for operator {}", op.name()), e.get("values"));
                }
                Some(op @ (Op::Exists | Op::DoesNotExist)) if matches!(raw, Some(Some(n)) if n > 0) => {
                    p.add(&vp, format!("must be empty for operator {}", op.name()), e.get("values"));
                }
                _ => {}
            }
            if let (Some(key), Some(op)) = (key, op) {
                exprs.push(Expr { key, op, values });
            }
        }
    }
    Selector::new(labels, exprs)
}

fn read_port_number(p: &mut Problems, path: &str, v: &Value) -> Option<u16> {
    if v.as_str().is_some() {
        p.add(path, "is a named port, which is not supported: use a port number", Some(v));
        return None;
    }
    match v.as_int() {
        Some(n) if (1..=65535).contains(&n) => Some(n as u16),
        _ => {
            p.add(path, "must be an integer from 1 to 65535", Some(v));
            None
        }
    }
}

fn read_ports(p: &mut Problems, path: &str, v: &Value) -> Vec<PortRange> {
    let mut out = Vec::new();
    let list = match want_array(p, path, v) {
        Some(l) => l,
        None => return out,
    };
    for (i, item) in list.iter().enumerate() {
        let ip = index_path(path, i);
        let fields = match want_object(p, &ip, item) {
            Some(f) => f,
            None => continue,
        };
        unknown_fields(p, &ip, fields, &["protocol", "port", "endPort"]);
        let mut ok = true;
        let proto = match item.get("protocol") {
            None => Proto::Tcp,
            Some(pv) => match pv.as_str().and_then(Proto::parse) {
                Some(pr) => pr,
                None => {
                    p.add(&key_path(&ip, "protocol"), "must be TCP, UDP or SCTP", Some(pv));
                    ok = false;
                    Proto::Tcp
                }
            },
        };
        let port = item.get("port").map(|v| read_port_number(p, &key_path(&ip, "port"), v));
        let end = item.get("endPort").map(|v| read_port_number(p, &key_path(&ip, "endPort"), v));
        let range = match (port, end) {
            (None, None) => None,
            (Some(Some(lo)), None) => Some((lo, lo)),
            (None, Some(_)) => {
                p.add(&key_path(&ip, "endPort"), "is set without port", item.get("endPort"));
                ok = false;
                None
            }
            (Some(Some(lo)), Some(Some(hi))) => {
                if hi < lo {
                    p.add(&key_path(&ip, "endPort"), format!("is less than port {}", lo), item.get("endPort"));
                    ok = false;
                }
                Some((lo, hi))
            }
            _ => {
                ok = false;
                None
            }
        };
        if ok {
            out.push(PortRange { proto, range });
        }
    }
    out
}

fn read_ip_block(p: &mut Problems, path: &str, v: &Value) -> Option<Peer> {
    let fields = want_object(p, path, v)?;
    unknown_fields(p, path, fields, &["cidr", "except"]);
    let cp = key_path(path, "cidr");
    let cidr = match v.get("cidr") {
        None => {
            p.add(&cp, "is required", None);
            None
        }
        Some(c) => want_string(p, &cp, c).and_then(|s| match parse_cidr(s) {
            Ok(c) => Some(c),
            Err(msg) => {
                p.add(&cp, msg, Some(c));
                None
            }
        }),
    };
    let mut except = Vec::new();
    let xp = key_path(path, "except");
    if let Some(list) = v.get("except").and_then(|l| want_array(p, &xp, l)) {
        for (i, item) in list.iter().enumerate() {
            let ip = index_path(&xp, i);
            let s = match want_string(p, &ip, item) {
                Some(s) => s,
                None => continue,
            };
            match parse_cidr(s) {
                Err(msg) => p.add(&ip, msg, Some(item)),
                Ok(x) => match cidr {
                    Some(c) if !c.strictly_contains(&x) => {
                        p.add(&ip, format!("is not a strict subset of cidr {}", c), Some(item));
                    }
                    _ => except.push(x),
                },
            }
        }
    }
    cidr.map(|cidr| Peer::Block { cidr, except })
}

fn read_peers(p: &mut Problems, path: &str, v: &Value, namespace: &str) -> Vec<Peer> {
    let mut out = Vec::new();
    let list = match want_array(p, path, v) {
        Some(l) => l,
        None => return out,
    };
    for (i, item) in list.iter().enumerate() {
        let pp = index_path(path, i);
        let fields = match want_object(p, &pp, item) {
            Some(f) => f,
            None => continue,
        };
        unknown_fields(p, &pp, fields, &["podSelector", "namespaceSelector", "ipBlock"]);
        let pods = item.get("podSelector");
        let namespaces = item.get("namespaceSelector");
        if let Some(block) = item.get("ipBlock") {
            if pods.is_some() || namespaces.is_some() {
                p.add(&pp, "sets ipBlock together with podSelector or namespaceSelector", None);
            }
            if let Some(peer) = read_ip_block(p, &key_path(&pp, "ipBlock"), block) {
                out.push(peer);
            }
            continue;
        }
        let pods = pods.map(|s| read_selector(p, &key_path(&pp, "podSelector"), s)).unwrap_or_default();
        let peer = match namespaces {
            Some(s) => PodPeer {
                namespace: None,
                pods,
                namespaces: Some(read_selector(p, &key_path(&pp, "namespaceSelector"), s)),
            },
            // Neither selector: every pod in every namespace.
            None if item.get("podSelector").is_none() => {
                PodPeer { namespace: None, pods, namespaces: Some(Selector::default()) }
            }
            None => PodPeer { namespace: Some(namespace.to_string()), pods, namespaces: None },
        };
        out.push(Peer::Pods(peer));
    }
    out
}

fn read_rules(p: &mut Problems, path: &str, v: &Value, dir: Dir, namespace: &str) -> Vec<Rule> {
    let peers_key = match dir {
        Dir::Ingress => "from",
        Dir::Egress => "to",
    };
    let mut out = Vec::new();
    let list = match want_array(p, path, v) {
        Some(l) => l,
        None => return out,
    };
    for (i, item) in list.iter().enumerate() {
        let rp = index_path(path, i);
        let fields = match want_object(p, &rp, item) {
            Some(f) => f,
            None => continue,
        };
        unknown_fields(p, &rp, fields, &[peers_key, "ports", "action"]);
        let action = match item.get("action") {
            None => Action::Allow,
            Some(a) => match a.as_str() {
                Some("Allow") => Action::Allow,
                Some("Deny") => Action::Deny,
                _ => {
                    p.add(&key_path(&rp, "action"), "must be Allow or Deny", Some(a));
                    Action::Allow
                }
            },
        };
        let peers =
            item.get(peers_key).map(|v| read_peers(p, &key_path(&rp, peers_key), v, namespace)).unwrap_or_default();
        let ports = item.get("ports").map(|v| read_ports(p, &key_path(&rp, "ports"), v)).unwrap_or_default();
        out.push(Rule { action, peers, ports });
    }
    out
}

fn read_policy(p: &mut Problems, path: &str, v: &Value) -> Option<Policy> {
    let top = want_object(p, path, v)?;
    let object_form = top.iter().any(|(k, _)| k == "metadata" || k == "spec");
    let (meta, meta_path, spec, spec_path);
    let empty = Value::Obj(Vec::new());
    if object_form {
        unknown_fields(p, path, top, &["apiVersion", "kind", "metadata", "spec", "status"]);
        if let Some(kind) = v.get("kind") {
            if kind.as_str() != Some("NetworkPolicy") {
                p.add(&key_path(path, "kind"), "must be NetworkPolicy", Some(kind));
            }
        }
        meta_path = key_path(path, "metadata");
        spec_path = key_path(path, "spec");
        meta = match v.get("metadata") {
            Some(m) => m,
            None => {
                p.add(&meta_path, "is required", None);
                &empty
            }
        };
        spec = match v.get("spec") {
            Some(s) => s,
            None => {
                p.add(&spec_path, "is required", None);
                &empty
            }
        };
        want_object(p, &meta_path, meta)?;
        match want_object(p, &spec_path, spec) {
            Some(fields) => {
                unknown_fields(p, &spec_path, fields, &["podSelector", "policyTypes", "ingress", "egress", "priority"])
            }
            None => return None,
        }
    } else {
        unknown_fields(
            p,
            path,
            top,
            &["name", "namespace", "priority", "podSelector", "policyTypes", "ingress", "egress"],
        );
        meta = v;
        spec = v;
        meta_path = path.to_string();
        spec_path = path.to_string();
    }
    let name = match meta.get("name") {
        None => {
            p.add(&key_path(&meta_path, "name"), "is required", None);
            None
        }
        Some(n) => match want_string(p, &key_path(&meta_path, "name"), n) {
            Some("") => {
                p.add(&key_path(&meta_path, "name"), "must not be empty", Some(n));
                None
            }
            other => other,
        },
    };
    let namespace = match meta.get("namespace") {
        None => "default",
        Some(n) => match want_string(p, &key_path(&meta_path, "namespace"), n) {
            Some("") | None => "default",
            Some(s) => s,
        },
    };
    let priority = spec.get("priority").and_then(|pv| match pv.as_int() {
        Some(n) if (0..=i32::MAX as i64).contains(&n) => Some(n as u32),
        _ => {
            p.add(
                &key_path(&spec_path, "priority"),
                "must be a non-negative integer no greater than 2147483647",
                Some(pv),
            );
            None
        }
    });
    let pod_selector = match spec.get("podSelector") {
        Some(s) => read_selector(p, &key_path(&spec_path, "podSelector"), s),
        None => {
            p.add(
                &key_path(&spec_path, "podSelector"),
                "is required: use {} to select every pod in the namespace",
                None,
            );
            Selector::default()
        }
    };
    let ingress = spec
        .get("ingress")
        .map(|r| read_rules(p, &key_path(&spec_path, "ingress"), r, Dir::Ingress, namespace))
        .unwrap_or_default();
    let egress = spec
        .get("egress")
        .map(|r| read_rules(p, &key_path(&spec_path, "egress"), r, Dir::Egress, namespace))
        .unwrap_or_default();
    // Kubernetes: Ingress always, Egress when the policy has an egress section.
    let (mut has_ingress, mut has_egress) = (true, spec.get("egress").is_some());
    let tp = key_path(&spec_path, "policyTypes");
    if let Some(types) = spec.get("policyTypes").and_then(|t| want_array(p, &tp, t)) {
        if !types.is_empty() {
            has_ingress = false;
            has_egress = false;
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    Some("Ingress") => has_ingress = true,
                    Some("Egress") => has_egress = true,
                    _ => p.add(&index_path(&tp, i), "must be Ingress or Egress", Some(t)),
                }
            }
        }
    }
    Some(Policy {
        name: name?.to_string(),
        namespace: namespace.to_string(),
        priority,
        pod_selector,
        has_ingress,
        has_egress,
        ingress,
        egress,
    })
}

/// Reads the request's `policies` list. The policies are returned even when
/// there are problems; callers must not act on them unless `p` is empty.
pub fn read_policies(p: &mut Problems, v: Option<&Value>) -> Vec<Policy> {
    let mut out: Vec<Policy> = Vec::new();
    let list = match v {
        None => {
            p.add("policies", "is required", None);
            return Vec::new();
        }
        Some(v) => match want_array(p, "policies", v) {
            Some(l) => l,
            None => return Vec::new(),
        },
    };
    let mut seen = std::collections::BTreeMap::new();
    for (i, item) in list.iter().enumerate() {
        let path = index_path("policies", i);
        if let Some(policy) = read_policy(p, &path, item) {
            match seen.entry((policy.namespace.clone(), policy.name.clone())) {
                std::collections::btree_map::Entry::Occupied(j) => p.add(
                    &path,
                    format!("has the same namespace and name as policies[{}]: {}", j.get(), policy.id()),
                    None,
                ),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
            out.push(policy);
        }
    }
    out
}

fn read_address(p: &mut Problems, path: &str, v: &Value) -> Option<Addr> {
    let s = want_string(p, path, v)?;
    let a = parse_addr(s);
    if a.is_none() {
        p.add(path, "is not an IP address", Some(v));
    }
    a
}

pub fn read_identity(p: &mut Problems, path: &str, v: Option<&Value>) -> Option<Identity> {
    let v = match v {
        Some(v) => v,
        None => {
            p.add(path, "is required", None);
            return None;
        }
    };
    want_object(p, path, v)?;
    let namespace = match v.get("namespace") {
        None => "default".to_string(),
        Some(n) => match want_string(p, &key_path(path, "namespace"), n) {
            Some("") | None => "default".to_string(),
            Some(s) => s.to_string(),
        },
    };
    let name = v.get("name").and_then(|n| want_string(p, &key_path(path, "name"), n)).map(str::to_string);
    let labels = v.get("labels").map(|l| read_labels(p, &key_path(path, "labels"), l)).unwrap_or_default();
    let mut namespace_labels =
        v.get("namespaceLabels").map(|l| read_labels(p, &key_path(path, "namespaceLabels"), l)).unwrap_or_default();
    // Kubernetes sets this label on every namespace; fill it in when the host did not.
    if crate::selector::label(&namespace_labels, "kubernetes.io/metadata.name").is_none() {
        namespace_labels.push(("kubernetes.io/metadata.name".to_string(), namespace.clone()));
        namespace_labels.sort();
    }
    let mut addresses = Vec::new();
    let ap = key_path(path, "addresses");
    if let Some(list) = v.get("addresses").and_then(|l| want_array(p, &ap, l)) {
        for (i, a) in list.iter().enumerate() {
            if let Some(a) = read_address(p, &index_path(&ap, i), a) {
                addresses.push(a);
            }
        }
    }
    Some(Identity { namespace, name, labels, namespace_labels, addresses })
}

pub fn read_endpoint(p: &mut Problems, path: &str, v: Option<&Value>) -> Option<Endpoint> {
    let value = match v {
        Some(v) => v,
        None => {
            p.add(path, "is required", None);
            return None;
        }
    };
    if let Some(a) = value.get("address") {
        let pod_fields = ["namespace", "name", "labels", "namespaceLabels", "addresses"];
        if pod_fields.iter().any(|f| value.get(f).is_some()) {
            p.add(
                &key_path(path, "address"),
                "is for endpoints that are not pods: a pod lists its addresses in addresses",
                Some(a),
            );
            return None;
        }
        return read_address(p, &key_path(path, "address"), a).map(Endpoint::Address);
    }
    read_identity(p, path, v).map(Endpoint::Pod)
}
