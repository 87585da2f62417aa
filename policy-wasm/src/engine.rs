//! Plans and verdicts. Both walk the same ordered rule list (`Side`), so a
//! verdict is, by construction, what the installed plan does to the flow.

use std::collections::{BTreeMap, BTreeSet};

use crate::ip::Addr;
use crate::json::{obj, Value};
use crate::model::{Action, Dir, Endpoint, Identity, Peer, PodPeer, Policy, Proto, Rule};

impl PodPeer {
    pub fn matches(&self, pod: &Identity) -> bool {
        let in_scope = match (&self.namespace, &self.namespaces) {
            (Some(ns), _) => *ns == pod.namespace,
            (None, Some(sel)) => sel.matches(&pod.namespace_labels),
            (None, None) => true,
        };
        in_scope && self.pods.matches(&pod.labels)
    }

    /// The selector's meaning as text: namespace scope plus both selectors,
    /// canonicalised, so equal meanings give equal set names on every node.
    pub fn canonical(&self) -> String {
        obj(vec![
            ("namespace", self.namespace.as_deref().map_or(Value::Null, Value::from)),
            ("podSelector", self.pods.canonical()),
            ("namespaceSelector", self.namespaces.as_ref().map_or(Value::Null, |s| s.canonical())),
        ])
        .to_json()
    }

    /// "s" and the first 12 hex digits of the FNV-1a 64 hash of the canonical text.
    pub fn set_name(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.canonical().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("s{:012x}", h >> 16)
    }

    pub fn describe(&self) -> String {
        let pods = if self.pods.is_everything() {
            "all pods".to_string()
        } else {
            format!("pods with {}", self.pods.describe())
        };
        let scope = match (&self.namespace, &self.namespaces) {
            (Some(ns), _) => format!("in namespace {}", ns),
            (None, Some(sel)) if !sel.is_everything() => format!("in namespaces with {}", sel.describe()),
            _ => "in all namespaces".to_string(),
        };
        format!("{} {}", pods, scope)
    }
}

/// One rule of one policy, in a pod's evaluation order.
pub struct Entry<'a> {
    pub policy: &'a Policy,
    pub index: usize,
    pub rule: &'a Rule,
}

/// What the policies say about one direction of one pod.
pub struct Side<'a> {
    /// Priority levels ascending, Deny before Allow within a level, then the
    /// policies without priority (Deny, then Allow); first match decides.
    pub entries: Vec<Entry<'a>>,
    /// The policies without priority that select the pod for this direction,
    /// by namespace/name. Any of them makes the pod isolated.
    pub isolating: Vec<&'a Policy>,
    /// Whether any policy at all selects the pod for this direction.
    pub selected: bool,
}

pub fn side<'a>(policies: &'a [Policy], pod: &Identity, dir: Dir) -> Side<'a> {
    let mine: Vec<&Policy> = policies.iter().filter(|p| p.has(dir) && p.selects(pod)).collect();
    let mut entries: Vec<Entry> = mine
        .iter()
        .flat_map(|&policy| {
            policy.rules(dir).iter().enumerate().map(move |(index, rule)| Entry { policy, index, rule })
        })
        .collect();
    entries.sort_by(|a, b| {
        let key = |e: &Entry<'a>| {
            let p = e.policy;
            (p.priority.is_none(), p.priority, e.rule.action, p.namespace.as_str(), p.name.as_str(), e.index)
        };
        key(a).cmp(&key(b))
    });
    let mut isolating: Vec<&Policy> = mine.iter().copied().filter(|p| p.priority.is_none()).collect();
    isolating.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Side { entries, isolating, selected: !mine.is_empty() }
}

/// A flow as one side of it sees the other end.
pub struct Flow<'a> {
    pub peer: &'a Endpoint,
    /// The peer's address in this flow, for ipBlock peers.
    pub peer_address: Option<Addr>,
    pub protocol: Proto,
    pub port: u16,
}

pub fn rule_matches(rule: &Rule, flow: &Flow) -> bool {
    let peer_ok = rule.peers.is_empty()
        || rule.peers.iter().any(|peer| match peer {
            Peer::Pods(pp) => matches!(flow.peer, Endpoint::Pod(id) if pp.matches(id)),
            Peer::Block { cidr, except } => {
                flow.peer_address.map_or(false, |a| cidr.contains(&a) && !except.iter().any(|x| x.contains(&a)))
            }
        });
    let port_ok = rule.ports.is_empty() || rule.ports.iter().any(|p| p.matches(flow.protocol, flow.port));
    peer_ok && port_ok
}

pub struct Half {
    pub dir: Dir,
    pub action: Action,
    pub reason: String,
    pub policy: Option<String>,
    pub rule: Option<usize>,
}

impl Half {
    pub fn not_a_pod(dir: Dir) -> Half {
        Half { dir, action: Action::Allow, reason: "not a pod".to_string(), policy: None, rule: None }
    }

    pub fn to_value(&self) -> Value {
        let mut fields = vec![("verdict", self.action.name().into()), ("reason", self.reason.as_str().into())];
        if let Some(p) = &self.policy {
            fields.push(("policy", p.as_str().into()));
        }
        if let Some(r) = self.rule {
            fields.push(("rule", r.into()));
        }
        fields.push(("direction", self.dir.name().into()));
        obj(fields)
    }
}

pub fn decide(policies: &[Policy], pod: &Identity, dir: Dir, flow: &Flow) -> Half {
    let s = side(policies, pod, dir);
    if let Some(e) = s.entries.iter().find(|e| rule_matches(e.rule, flow)) {
        let verb = match e.rule.action {
            Action::Allow => "allowed",
            Action::Deny => "denied",
        };
        let mut reason = format!("{} by {} {} rule {}", verb, e.policy.id(), dir.name(), e.index);
        match (e.policy.priority, e.rule.action) {
            (Some(p), a) => reason.push_str(&format!(" (priority {}, {})", p, a.title())),
            (None, Action::Deny) => reason.push_str(" (Deny)"),
            (None, Action::Allow) => {}
        }
        return Half { dir, action: e.rule.action, reason, policy: Some(e.policy.id()), rule: Some(e.index) };
    }
    if let Some(first) = s.isolating.first() {
        let mut names: Vec<String> = s.isolating.iter().take(3).map(|p| p.id()).collect();
        if s.isolating.len() > 3 {
            names.push(format!("{} more", s.isolating.len() - 3));
        }
        let who = match names.len() {
            1 => names[0].clone(),
            n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
        };
        let reason = format!("denied by {}: the pod is isolated for {} and no rule allows the flow", who, dir.name());
        return Half { dir, action: Action::Deny, reason, policy: Some(first.id()), rule: None };
    }
    let reason = if s.selected {
        format!("no rule matches the flow and the pod is not isolated for {}", dir.name())
    } else {
        "no policy selects the pod".to_string()
    };
    Half { dir, action: Action::Allow, reason, policy: None, rule: None }
}

/// The addresses a flow between two endpoints uses: the first pair of the
/// same family, sender's addresses first (a pod with IPv4 and IPv6 talks
/// IPv4 to a peer that has IPv4).
pub fn flow_addresses(from: &Endpoint, to: &Endpoint) -> (Option<Addr>, Option<Addr>) {
    let (src, dst) = (from.addresses(), to.addresses());
    for a in &src {
        if let Some(b) = dst.iter().find(|b| a.same_family(b)) {
            return (Some(*a), Some(*b));
        }
    }
    (src.first().copied(), dst.first().copied())
}

pub fn verdict(policies: &[Policy], from: &Endpoint, to: &Endpoint, protocol: Proto, port: u16) -> Value {
    let (src, dst) = flow_addresses(from, to);
    let egress = match from {
        Endpoint::Pod(id) => decide(policies, id, Dir::Egress, &Flow { peer: to, peer_address: dst, protocol, port }),
        Endpoint::Address(_) => Half::not_a_pod(Dir::Egress),
    };
    let ingress = match to {
        Endpoint::Pod(id) => {
            decide(policies, id, Dir::Ingress, &Flow { peer: from, peer_address: src, protocol, port })
        }
        Endpoint::Address(_) => Half::not_a_pod(Dir::Ingress),
    };
    let allowed = egress.action == Action::Allow && ingress.action == Action::Allow;
    let reason = [&egress, &ingress]
        .iter()
        .filter(|h| allowed || h.action == Action::Deny)
        .map(|h| format!("{}: {}", h.dir.name(), h.reason))
        .collect::<Vec<_>>()
        .join("; ");
    let addr = |a: Option<Addr>| a.map_or(Value::Null, |a| Value::Str(a.to_string()));
    obj(vec![
        ("ok", true.into()),
        ("verdict", if allowed { "allow" } else { "deny" }.into()),
        ("reason", reason.into()),
        ("egress", egress.to_value()),
        ("ingress", ingress.to_value()),
        (
            "flow",
            obj(vec![
                ("from", addr(src)),
                ("to", addr(dst)),
                ("protocol", protocol.name().into()),
                ("port", port.into()),
            ]),
        ),
    ])
}

fn rule_value(e: &Entry, sets: &mut BTreeMap<String, String>) -> Value {
    let peers = e
        .rule
        .peers
        .iter()
        .map(|peer| match peer {
            Peer::Pods(pp) => {
                let name = pp.set_name();
                sets.insert(name.clone(), pp.describe());
                obj(vec![("set", name.into())])
            }
            Peer::Block { cidr, except } => obj(vec![
                ("cidr", cidr.to_string().into()),
                ("except", Value::Arr(except.iter().map(|x| x.to_string().into()).collect())),
            ]),
        })
        .collect();
    let ports = e
        .rule
        .ports
        .iter()
        .map(|p| {
            let mut f = vec![("protocol", p.proto.name().into())];
            if let Some((lo, hi)) = p.range {
                f.push(("port", lo.into()));
                f.push(("endPort", hi.into()));
            }
            obj(f)
        })
        .collect();
    obj(vec![
        ("action", e.rule.action.name().into()),
        ("policy", e.policy.id().into()),
        ("index", e.index.into()),
        ("priority", e.policy.priority.map_or(Value::Null, Value::from)),
        ("peers", Value::Arr(peers)),
        ("ports", Value::Arr(ports)),
    ])
}

pub fn plan(policies: &[Policy], pod: &Identity) -> Value {
    let mut sets = BTreeMap::new();
    let mut member_of = BTreeSet::new();
    for policy in policies {
        for rule in policy.ingress.iter().chain(policy.egress.iter()) {
            for peer in &rule.peers {
                if let Peer::Pods(pp) = peer {
                    if pp.matches(pod) {
                        let name = pp.set_name();
                        sets.insert(name.clone(), pp.describe());
                        member_of.insert(name);
                    }
                }
            }
        }
    }
    let mut half = |dir: Dir| {
        let s = side(policies, pod, dir);
        let rules = s.entries.iter().map(|e| rule_value(e, &mut sets)).collect();
        obj(vec![("isolated", (!s.isolating.is_empty()).into()), ("rules", Value::Arr(rules))])
    };
    let ingress = half(Dir::Ingress);
    let egress = half(Dir::Egress);
    let plan = obj(vec![
        ("ingress", ingress),
        ("egress", egress),
        ("memberOf", Value::Arr(member_of.into_iter().map(Value::Str).collect())),
        ("sets", Value::Obj(sets.into_iter().map(|(k, v)| (k, Value::Str(v))).collect())),
    ]);
    obj(vec![("ok", true.into()), ("plan", plan)])
}
