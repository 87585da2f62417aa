//! Kubernetes label selectors: matching, a canonical form (the same meaning
//! always gives the same text) and a short description for people.

use crate::json::{obj, Value};

/// Labels as sorted `(key, value)` pairs.
pub type Labels = Vec<(String, String)>;

pub fn label<'a>(labels: &'a Labels, key: &str) -> Option<&'a str> {
    labels.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| labels[i].1.as_str())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "In" => Some(Op::In),
            "NotIn" => Some(Op::NotIn),
            "Exists" => Some(Op::Exists),
            "DoesNotExist" => Some(Op::DoesNotExist),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::In => "In",
            Op::NotIn => "NotIn",
            Op::Exists => "Exists",
            Op::DoesNotExist => "DoesNotExist",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expr {
    pub key: String,
    pub op: Op,
    /// Sorted and without duplicates.
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Sorted by key.
    pub match_labels: Labels,
    /// Sorted and without duplicates.
    pub exprs: Vec<Expr>,
}

impl Selector {
    pub fn new(mut match_labels: Labels, mut exprs: Vec<Expr>) -> Selector {
        match_labels.sort();
        for e in exprs.iter_mut() {
            e.values.sort();
            e.values.dedup();
        }
        exprs.sort();
        exprs.dedup();
        Selector { match_labels, exprs }
    }

    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.exprs.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| label(labels, k) == Some(v.as_str()))
            && self.exprs.iter().all(|e| {
                let have = label(labels, &e.key);
                match e.op {
                    Op::In => have.map_or(false, |v| e.values.iter().any(|x| x == v)),
                    Op::NotIn => have.map_or(true, |v| !e.values.iter().any(|x| x == v)),
                    Op::Exists => have.is_some(),
                    Op::DoesNotExist => have.is_none(),
                }
            })
    }

    /// The selector as JSON with sorted labels and expressions.
    pub fn canonical(&self) -> Value {
        let labels = self.match_labels.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))).collect();
        let exprs = self
            .exprs
            .iter()
            .map(|e| {
                obj(vec![
                    ("key", e.key.as_str().into()),
                    ("operator", e.op.name().into()),
                    ("values", Value::Arr(e.values.iter().map(|v| v.as_str().into()).collect())),
                ])
            })
            .collect();
        obj(vec![("matchLabels", Value::Obj(labels)), ("matchExpressions", Value::Arr(exprs))])
    }

    /// "app=web, tier in (a, b), !legacy"; empty for the selector of everything.
    pub fn describe(&self) -> String {
        let mut terms: Vec<String> = self.match_labels.iter().map(|(k, v)| format!("{}={}", k, v)).collect();
        for e in &self.exprs {
            terms.push(match e.op {
                Op::In => format!("{} in ({})", e.key, e.values.join(", ")),
                Op::NotIn => format!("{} notin ({})", e.key, e.values.join(", ")),
                Op::Exists => e.key.clone(),
                Op::DoesNotExist => format!("!{}", e.key),
            });
        }
        terms.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut l: Labels = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.sort();
        l
    }

    fn expr(key: &str, op: Op, values: &[&str]) -> Expr {
        Expr { key: key.into(), op, values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn matches_like_kubernetes() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let cases: Vec<(Selector, bool)> = vec![
            (Selector::default(), true),
            (Selector::new(labels(&[("app", "web")]), vec![]), true),
            (Selector::new(labels(&[("app", "db")]), vec![]), false),
            (Selector::new(labels(&[("app", "web"), ("x", "y")]), vec![]), false),
            (Selector::new(vec![], vec![expr("tier", Op::In, &["front", "back"])]), true),
            (Selector::new(vec![], vec![expr("tier", Op::In, &["back"])]), false),
            (Selector::new(vec![], vec![expr("zone", Op::In, &["a"])]), false),
            (Selector::new(vec![], vec![expr("tier", Op::NotIn, &["back"])]), true),
            (Selector::new(vec![], vec![expr("tier", Op::NotIn, &["front"])]), false),
            (Selector::new(vec![], vec![expr("zone", Op::NotIn, &["a"])]), true),
            (Selector::new(vec![], vec![expr("app", Op::Exists, &[])]), true),
            (Selector::new(vec![], vec![expr("zone", Op::Exists, &[])]), false),
            (Selector::new(vec![], vec![expr("zone", Op::DoesNotExist, &[])]), true),
            (Selector::new(vec![], vec![expr("app", Op::DoesNotExist, &[])]), false),
        ];
        for (i, (sel, want)) in cases.iter().enumerate() {
            assert_eq!(sel.matches(&pod), *want, "case {}", i);
        }
    }

    #[test]
    fn canonical_form_ignores_order_and_duplicates() {
        let a = Selector::new(
            labels(&[("b", "2"), ("a", "1")]),
            vec![expr("t", Op::In, &["y", "x", "x"]), expr("s", Op::Exists, &[])],
        );
        let b = Selector::new(
            labels(&[("a", "1"), ("b", "2")]),
            vec![expr("s", Op::Exists, &[]), expr("t", Op::In, &["x", "y"])],
        );
        assert_eq!(a.canonical().to_json(), b.canonical().to_json());
        assert_eq!(a.describe(), "a=1, b=2, s, t in (x, y)");
    }
}
