//! cnichain's network policy engine (Kubernetes NetworkPolicy plus rule
//! actions and priorities), built to wasm32-unknown-unknown.
//!
//! ABI version 1: only pointers and lengths cross, JSON both ways.
//! `alloc(len) -> ptr`, `free(ptr, len)`, `evaluate(ptr, len) -> (out_ptr << 32) | out_len`
//! and `cnichain_policy_abi() -> 1`. The host frees the answer with
//! `free(out_ptr, out_len)`. Bad input never traps: it gets
//! `{"ok":false,"problems":[...]}`.
//!
//! Ops: `validate`, `plan` and `verdict` take the policies inline; `load`
//! parses and validates them once and answers a handle that `plan` and
//! `verdict` accept instead (the last `MAX_LOADED` sets are kept), and
//! `unload` drops one. The ABI functions are the same either way.

pub mod engine;
pub mod ip;
pub mod json;
pub mod model;
pub mod selector;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use json::{obj, Value};
use model::{key_path, read_endpoint, read_identity, read_policies, Policy, Problems, Proto};

pub const ABI_VERSION: u32 = 1;

/// How many loaded policy sets an instance keeps: loading one more evicts
/// the oldest, whose handle then answers "is not a loaded policy set".
pub const MAX_LOADED: usize = 4;

/// The policy sets `load` parsed, oldest first, by handle. Handles count up
/// from 1 and are never reused, so a stale handle never names another set.
struct Loaded {
    next: u64,
    sets: VecDeque<(u64, Rc<Vec<Policy>>)>,
}

// wasm32-unknown-unknown has one thread, so this is one static per instance;
// under `cargo test` every test thread has its own.
thread_local! {
    static LOADED: RefCell<Loaded> = RefCell::new(Loaded { next: 1, sets: VecDeque::new() });
}

fn load(policies: Vec<Policy>) -> u64 {
    LOADED.with(|l| {
        let mut l = l.borrow_mut();
        let handle = l.next;
        l.next += 1;
        l.sets.push_back((handle, Rc::new(policies)));
        while l.sets.len() > MAX_LOADED {
            l.sets.pop_front();
        }
        handle
    })
}

fn loaded(handle: u64) -> Option<Rc<Vec<Policy>>> {
    LOADED.with(|l| l.borrow().sets.iter().find(|(h, _)| *h == handle).map(|(_, s)| s.clone()))
}

fn unload(handle: u64) -> bool {
    LOADED.with(|l| {
        let mut l = l.borrow_mut();
        let before = l.sets.len();
        l.sets.retain(|(h, _)| *h != handle);
        l.sets.len() != before
    })
}

/// Reads `handle` (required) as the handle of a loaded set: `None`, with a
/// problem, when it is not an integer or names no set this instance holds.
fn read_handle(p: &mut Problems, v: Option<&Value>) -> Option<(u64, Rc<Vec<Policy>>)> {
    let v = match v {
        Some(v) => v,
        None => {
            p.add("handle", "is required", None);
            return None;
        }
    };
    let found = match v.as_int() {
        Some(n) if n > 0 => loaded(n as u64).map(|set| (n as u64, set)),
        Some(_) => None,
        None => {
            p.add("handle", "must be an integer: a handle that load answered", Some(v));
            return None;
        }
    };
    if found.is_none() {
        p.add("handle", "is not a loaded policy set", Some(v));
    }
    found
}

/// The policies of a plan or verdict: inline (`policies`) or loaded
/// (`handle`), exactly one of the two. Problems go to `p` as usual.
fn read_policy_set(p: &mut Problems, req: &Value) -> Rc<Vec<Policy>> {
    match (req.get("policies"), req.get("handle")) {
        (Some(_), Some(h)) => {
            p.add("handle", "cannot be given together with policies: give one of them", Some(h));
            Rc::new(Vec::new())
        }
        (None, None) => {
            p.add("policies", "is required unless handle names a loaded policy set", None);
            Rc::new(Vec::new())
        }
        (Some(list), None) => Rc::new(read_policies(p, Some(list))),
        (None, h) => read_handle(p, h).map(|(_, set)| set).unwrap_or_default(),
    }
}

fn problems_value(p: Problems) -> Value {
    obj(vec![("ok", false.into()), ("problems", Value::Arr(p.0.iter().map(|x| x.to_value()).collect()))])
}

fn check_fields(p: &mut Problems, req: &Value, known: &[&str]) {
    if let Some(fields) = req.as_object() {
        for (k, _) in fields {
            if !known.contains(&k.as_str()) {
                p.add(&key_path("", k), "is not a known field", None);
            }
        }
    }
}

fn answer(req: &Value) -> Value {
    let mut p = Problems::default();
    if req.as_object().is_none() {
        p.add("", "must be an object", Some(req));
        return problems_value(p);
    }
    let op = match req.get("op") {
        Some(Value::Str(op)) => op.as_str(),
        Some(other) => {
            p.add("op", "must be a string", Some(other));
            return problems_value(p);
        }
        None => {
            p.add("op", "is required", None);
            return problems_value(p);
        }
    };
    match op {
        "validate" => {
            check_fields(&mut p, req, &["op", "policies"]);
            read_policies(&mut p, req.get("policies"));
            if p.is_empty() {
                obj(vec![("ok", true.into())])
            } else {
                problems_value(p)
            }
        }
        "load" => {
            check_fields(&mut p, req, &["op", "policies"]);
            let policies = read_policies(&mut p, req.get("policies"));
            if p.is_empty() {
                obj(vec![("ok", true.into()), ("handle", load(policies).into())])
            } else {
                problems_value(p)
            }
        }
        "unload" => {
            check_fields(&mut p, req, &["op", "handle"]);
            match read_handle(&mut p, req.get("handle")) {
                Some((handle, _)) if p.is_empty() => {
                    unload(handle);
                    obj(vec![("ok", true.into())])
                }
                _ => problems_value(p),
            }
        }
        "plan" => {
            check_fields(&mut p, req, &["op", "policies", "handle", "pod"]);
            let policies = read_policy_set(&mut p, req);
            let pod = read_identity(&mut p, "pod", req.get("pod"));
            match pod {
                Some(pod) if p.is_empty() => engine::plan(&policies, &pod),
                _ => problems_value(p),
            }
        }
        "verdict" => {
            check_fields(&mut p, req, &["op", "policies", "handle", "from", "to", "port", "protocol"]);
            let policies = read_policy_set(&mut p, req);
            let from = read_endpoint(&mut p, "from", req.get("from"));
            let to = read_endpoint(&mut p, "to", req.get("to"));
            let port = match req.get("port") {
                None => {
                    p.add("port", "is required", None);
                    None
                }
                Some(v) => match v.as_int() {
                    Some(n) if (1..=65535).contains(&n) => Some(n as u16),
                    _ => {
                        p.add("port", "must be an integer from 1 to 65535", Some(v));
                        None
                    }
                },
            };
            let protocol = match req.get("protocol") {
                None => Some(Proto::Tcp),
                Some(v) => {
                    let pr = v.as_str().and_then(|s| Proto::parse(&s.to_ascii_uppercase()));
                    if pr.is_none() {
                        p.add("protocol", "must be TCP, UDP or SCTP", Some(v));
                    }
                    pr
                }
            };
            match (from, to, port, protocol) {
                (Some(from), Some(to), Some(port), Some(protocol)) if p.is_empty() => {
                    engine::verdict(&policies, &from, &to, protocol, port)
                }
                _ => problems_value(p),
            }
        }
        _ => {
            p.add("op", "is not a known operation: use validate, load, unload, plan or verdict", req.get("op"));
            problems_value(p)
        }
    }
}

/// Answers one request; the whole engine behind `evaluate`, callable from tests.
pub fn handle(request: &[u8]) -> String {
    let mut p = Problems::default();
    let text = match std::str::from_utf8(request) {
        Ok(t) => t,
        Err(e) => {
            p.add("", format!("is not UTF-8: invalid byte at {}", e.valid_up_to()), None);
            return problems_value(p).to_json();
        }
    };
    match json::parse(text) {
        Ok(req) => answer(&req).to_json(),
        Err(msg) => {
            p.add("", format!("is not valid JSON: {}", msg), None);
            problems_value(p).to_json()
        }
    }
}

/// The exports exist only in the wasm build: on the host, `alloc` and
/// `free` would shadow the C library's functions of the same names.
#[cfg(target_arch = "wasm32")]
mod abi {
    use super::{handle, ABI_VERSION};

    /// Byte buffers are allocated with alignment 1 and at least one byte, so
    /// that `alloc(0)` still returns a pointer that `free(ptr, 0)` accepts.
    fn layout(len: u32) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(len.max(1) as usize, 1).ok()
    }

    #[no_mangle]
    pub extern "C" fn cnichain_policy_abi() -> u32 {
        ABI_VERSION
    }

    /// Returns 0 when `len` bytes cannot be had; the host reports that.
    #[no_mangle]
    pub extern "C" fn alloc(len: u32) -> u32 {
        match layout(len) {
            // SAFETY: the layout has a non-zero size.
            Some(l) => unsafe { std::alloc::alloc(l) as usize as u32 },
            None => 0,
        }
    }

    /// # Safety
    /// `ptr` and `len` must come from one `alloc` call (or one `evaluate`
    /// answer), freed once.
    #[no_mangle]
    pub unsafe extern "C" fn free(ptr: u32, len: u32) {
        if let (true, Some(l)) = (ptr != 0, layout(len)) {
            std::alloc::dealloc(ptr as usize as *mut u8, l);
        }
    }

    /// # Safety
    /// `ptr` and `len` must describe readable memory, as `alloc` returns it.
    #[no_mangle]
    pub unsafe extern "C" fn evaluate(ptr: u32, len: u32) -> u64 {
        let request: &[u8] = if len == 0 || ptr == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(ptr as usize as *const u8, len as usize)
        };
        // The answer is handed over as a boxed slice, whose allocation has
        // exactly the layout `free(out_ptr, out_len)` gives back.
        let answer: Box<[u8]> = handle(request).into_bytes().into_boxed_slice();
        let out_len = answer.len() as u32;
        let out_ptr = Box::into_raw(answer) as *mut u8 as usize as u32;
        ((out_ptr as u64) << 32) | out_len as u64
    }
}

#[cfg(test)]
mod tests;
