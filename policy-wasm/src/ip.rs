//! IPv4 and IPv6 addresses and CIDR blocks, parsed strictly and printed in
//! canonical form (RFC 5952 for IPv6) so that plans compare byte for byte.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    V4(u32),
    V6(u128),
}

impl Addr {
    pub fn same_family(&self, other: &Addr) -> bool {
        matches!((self, other), (Addr::V4(_), Addr::V4(_)) | (Addr::V6(_), Addr::V6(_)))
    }

    fn bits(&self) -> (u128, u8) {
        match *self {
            Addr::V4(a) => (a as u128, 32),
            Addr::V6(a) => (a, 128),
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match *self {
            Addr::V4(a) => write!(f, "{}.{}.{}.{}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255),
            Addr::V6(a) => {
                let groups: Vec<u16> = (0..8).map(|i| (a >> (112 - 16 * i)) as u16).collect();
                // The longest run of two or more zero groups becomes "::" (the first on a tie).
                let (mut best, mut best_len, mut i) = (0usize, 0usize, 0usize);
                while i < 8 {
                    if groups[i] == 0 {
                        let start = i;
                        while i < 8 && groups[i] == 0 {
                            i += 1;
                        }
                        if i - start > best_len {
                            best = start;
                            best_len = i - start;
                        }
                    } else {
                        i += 1;
                    }
                }
                let hex = |gs: &[u16]| gs.iter().map(|g| format!("{:x}", g)).collect::<Vec<_>>().join(":");
                if best_len >= 2 {
                    write!(f, "{}::{}", hex(&groups[..best]), hex(&groups[best + best_len..]))
                } else {
                    write!(f, "{}", hex(&groups))
                }
            }
        }
    }
}

fn parse_v4(s: &str) -> Option<u32> {
    let mut n: u32 = 0;
    let mut count = 0;
    for part in s.split('.') {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // A leading zero is refused: some parsers read it as octal.
        if part.len() > 1 && part.starts_with('0') {
            return None;
        }
        let octet: u32 = part.parse().ok()?;
        if octet > 255 {
            return None;
        }
        n = (n << 8) | octet;
        count += 1;
    }
    if count == 4 {
        Some(n)
    } else {
        None
    }
}

fn parse_groups(s: &str, allow_v4_tail: bool) -> Option<Vec<u16>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    let parts: Vec<&str> = s.split(':').collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if allow_v4_tail && i == parts.len() - 1 && part.contains('.') {
            let v4 = parse_v4(part)?;
            out.push((v4 >> 16) as u16);
            out.push(v4 as u16);
        } else {
            if part.is_empty() || part.len() > 4 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u16::from_str_radix(part, 16).ok()?);
        }
    }
    Some(out)
}

fn parse_v6(s: &str) -> Option<u128> {
    let groups = match s.find("::") {
        Some(at) => {
            let (head, tail) = (&s[..at], &s[at + 2..]);
            if tail.contains("::") {
                return None;
            }
            let h = parse_groups(head, false)?;
            let t = parse_groups(tail, true)?;
            if h.len() + t.len() > 7 {
                return None;
            }
            let mut g = h;
            g.resize(8 - t.len(), 0);
            g.extend(t);
            g
        }
        None => parse_groups(s, true)?,
    };
    if groups.len() != 8 {
        return None;
    }
    Some(groups.iter().fold(0u128, |acc, &g| (acc << 16) | g as u128))
}

pub fn parse_addr(s: &str) -> Option<Addr> {
    if s.contains(':') {
        parse_v6(s).map(Addr::V6)
    } else {
        parse_v4(s).map(Addr::V4)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address: host bits are always zero.
    pub addr: Addr,
    pub prefix: u8,
}

fn mask(width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
        all & !((1u128 << (width - prefix)) - 1)
    }
}

impl Cidr {
    pub fn contains(&self, a: &Addr) -> bool {
        if !self.addr.same_family(a) {
            return false;
        }
        let (net, width) = self.addr.bits();
        let (x, _) = a.bits();
        x & mask(width, self.prefix) == net
    }

    /// True when `inner` is a strictly smaller block inside this one.
    pub fn strictly_contains(&self, inner: &Cidr) -> bool {
        inner.prefix > self.prefix && self.contains(&inner.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses "10.0.0.0/8" or "fd00::/64"; host bits set below the prefix are
/// cleared, as the kernel would.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (a, p) = match s.split_once('/') {
        Some(parts) => parts,
        None => return Err("is not a CIDR block: the prefix length is missing".to_string()),
    };
    let addr = parse_addr(a).ok_or_else(|| "is not a CIDR block: bad address".to_string())?;
    let width = addr.bits().1;
    let prefix: u8 = match p.parse::<u8>() {
        Ok(n) if n <= width && p.bytes().all(|b| b.is_ascii_digit()) && !(p.len() > 1 && p.starts_with('0')) => n,
        _ => return Err(format!("is not a CIDR block: the prefix length must be 0 to {}", width)),
    };
    let m = mask(width, prefix);
    let addr = match addr {
        Addr::V4(x) => Addr::V4((x as u128 & m) as u32),
        Addr::V6(x) => Addr::V6(x & m),
    };
    Ok(Cidr { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_addresses_canonically() {
        for (text, want) in [
            ("10.1.0.5", "10.1.0.5"),
            ("fd00::5", "fd00::5"),
            ("FD00:0:0:0:0:0:0:5", "fd00::5"),
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
            ("::ffff:192.0.2.1", "::ffff:c000:201"),
        ] {
            assert_eq!(parse_addr(text).map(|a| a.to_string()).as_deref(), Some(want), "{}", text);
        }
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.1.1.1",
            "1::2::3",
            "1:2:3:4:5:6:7:8:9",
            "g::",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7::8",
        ] {
            assert_eq!(parse_addr(bad), None, "{}", bad);
        }
    }

    #[test]
    fn cidr_blocks_clear_host_bits_and_contain_addresses() {
        let c = parse_cidr("10.1.2.3/16").unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains(&parse_addr("10.1.255.1").unwrap()));
        assert!(!c.contains(&parse_addr("10.2.0.1").unwrap()));
        assert!(!c.contains(&parse_addr("::1").unwrap()));
        assert!(parse_cidr("0.0.0.0/0").unwrap().contains(&parse_addr("1.2.3.4").unwrap()));
        assert!(parse_cidr("::/0").unwrap().contains(&parse_addr("fd00::1").unwrap()));
        assert!(parse_cidr("fd00::/8").unwrap().contains(&parse_addr("fdff::1").unwrap()));
        assert!(parse_cidr("10.0.0.0/8").unwrap().strictly_contains(&parse_cidr("10.1.0.0/16").unwrap()));
        assert!(!parse_cidr("10.0.0.0/8").unwrap().strictly_contains(&parse_cidr("10.0.0.0/8").unwrap()));
        assert!(parse_cidr("1.2.3.4/32").unwrap().contains(&parse_addr("1.2.3.4").unwrap()));
        assert!(parse_cidr("fd00::1/128").unwrap().contains(&parse_addr("fd00::1").unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "fd00::/129", "x/8", "10.0.0.0/08"] {
            assert!(parse_cidr(bad).is_err(), "{}", bad);
        }
    }
}
