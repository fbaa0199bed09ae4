//! The NDJSON line of one event, byte for byte what
//! `Record::Event(ev.into()).line()` gives, written without allocating and
//! without the formatting machinery: under a storm the ring buffer hands
//! over hundreds of thousands of events a second, and formatting them was
//! most of qtrace's CPU. The date and time up to the second is formatted
//! once per second; every string in the line (kind and hook names,
//! addresses, the time) needs no JSON escaping. The listener's owner comes
//! already rendered by serde, once per listener (`NdjsonSink`).

use std::net::IpAddr;

use crate::model::event::{write_rfc3339, Decoded};

/// Writes event lines, remembering the current second's formatted prefix.
pub(crate) struct EventLines {
    second: i128,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`.
    prefix: String,
}

impl EventLines {
    pub(crate) fn new() -> Self {
        Self { second: i128::MIN, prefix: String::new() }
    }

    /// Appends `ev`'s line, newline included, to `out`; `owner` is the
    /// JSON text of its listener's owner ([`Identity`] as serde writes it).
    ///
    /// [`Identity`]: crate::host::identity::Identity
    pub(crate) fn write(&mut self, out: &mut String, ev: &Decoded, owner: Option<&str>) {
        let k = ev.kind;
        out.push_str(r#"{"type":"event","time":""#);
        self.time(out, ev.time_ns);
        for (key, value) in [("kind", k.name()), ("stage", k.stage()), ("action", k.action())] {
            string_field(out, key, value);
        }
        number_field(out, "netns", ev.netns.into());
        string_field(out, "family", if ev.remote.is_ipv4() { "ipv4" } else { "ipv6" });
        address_fields(out, "local", ev.local.ip(), ev.local.port());
        address_fields(out, "remote", ev.remote.ip(), ev.remote.port());
        number_field(out, "accept_queue", ev.accept_queue.into());
        number_field(out, "accept_queue_max", ev.accept_queue_max.into());
        number_field(out, "syn_queue", ev.syn_queue.into());
        string_field(out, "hook", ev.hook);
        if let Some(owner) = owner {
            out.push_str(",\"owner\":");
            out.push_str(owner);
        }
        out.push_str("}\n");
    }

    /// The RFC 3339 time and its closing quote.
    fn time(&mut self, out: &mut String, ns: i128) {
        let (second, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u64);
        if second != self.second {
            self.second = second;
            self.prefix.clear();
            let _ = write_rfc3339(&mut self.prefix, second * 1_000_000_000);
            // Keep `...SS.`: drop the nine zero digits and the `Z`.
            self.prefix.truncate(self.prefix.len() - 10);
        }
        out.push_str(&self.prefix);
        push_digits(out, nanos, 9);
        out.push_str("Z\"");
    }
}

fn string_field(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":\"");
    out.push_str(value);
    out.push('"');
}

fn number_field(out: &mut String, key: &str, value: u64) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_digits(out, value, 1);
}

/// `"<side>_addr":"...","<side>_port":N`.
fn address_fields(out: &mut String, side: &str, ip: IpAddr, port: u16) {
    out.push_str(",\"");
    out.push_str(side);
    out.push_str("_addr\":\"");
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_digits(out, octet.into(), 1);
            }
        }
        // Rare in a storm, and its compression rules are the standard
        // library's to get right.
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
    out.push_str("\",\"");
    out.push_str(side);
    out.push_str("_port\":");
    push_digits(out, port.into(), 1);
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    while n > 0 || buf.len() - at < width {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::identity::{Identity, Runtime, Workload};
    use crate::host::runtime::Container;
    use crate::model::event::Kind;
    use crate::model::record::{EventRecord, Record};

    /// Owners with and without each field, and strings serde must escape.
    fn owners() -> Vec<Option<Identity>> {
        let full = Identity {
            pid: Some(4_194_304),
            comm: Some("we\"ird\\ \u{7f}\u{1}é".into()),
            exe: Some("/usr/sbin/nginx (deleted)".into()),
            uid: Some(0),
            user: Some("root".into()),
            cgroup: Some("/kubepods.slice/x.slice/cri-containerd-0.scope".into()),
            workload: Workload {
                unit: Some("a.service".into()),
                slice: Some("system.slice".into()),
                container_runtime: Some(Runtime::Containerd),
                container_id: Some("0".repeat(64)),
                pod_uid: Some("6b1f9c3e-5d2a-4f0e-9c1b-2a3d4e5f6a7b".into()),
            },
            container: Container {
                container_name: Some("web\u{2028}\"x\"".into()),
                image: Some("registry.example:5000/a/b@sha256:00".into()),
                pod_name: Some("web-0".into()),
                pod_namespace: Some("shop".into()),
            },
            netns_name: Some("blue\n".into()),
            unknown: Some("user: permission denied".into()),
            start: Some(7),
        };
        vec![None, Some(Identity::default()), Some(Identity::unknown("no process holding the socket was found")), Some(full)]
    }

    /// The same bytes as the serde record, for random events of every kind
    /// and family at any time, and for runs of events within one second,
    /// with every kind of owner.
    #[test]
    fn lines_match_the_record() {
        let owners = owners();
        // Events carry the naming part of the owner (`Identity::naming`).
        let owners: Vec<Option<Identity>> = owners.iter().map(|o| o.as_ref().map(Identity::naming)).collect();
        let rendered: Vec<Option<String>> = owners.iter().map(|o| o.as_ref().map(|o| serde_json::to_string(o).unwrap())).collect();
        let mut next = crate::model::event::xorshift(0x9e37_79b9_7f4a_7c15);
        let addrs = ["127.0.0.1:8080", "[::1]:443", "[::ffff:10.0.0.1]:1", "[2001:db8::7]:65535", "0.0.0.0:0", "255.255.255.255:9"];
        let (mut lines, mut line) = (EventLines::new(), String::new());
        let mut time: i128 = 1_795_219_200_999_999_990;
        for i in 0..20_000 {
            let pick = |n: u64| addrs[(n % addrs.len() as u64) as usize];
            // Mostly a clock ticking in small steps, sometimes a jump anywhere.
            time = if i % 50 == 0 { (next() as i128) - (1i128 << 62) } else { time + (next() % 3_000_000) as i128 };
            let ev = Decoded {
                time_ns: time,
                accept_queue: next() as u32,
                accept_queue_max: if i % 3 == 0 { 0 } else { next() as u32 },
                syn_queue: next() as u32 % 1000,
                hook: if i % 2 == 0 { "tracepoint:skb:kfree_skb" } else { "fexit:tcp_conn_request" },
                ..Decoded::example(Kind::ALL[i % Kind::ALL.len()], next() as u32, pick(next()), pick(next()))
            };
            line.clear();
            let o = i % owners.len();
            lines.write(&mut line, &ev, rendered[o].as_deref());
            assert_eq!(line, Record::Event(EventRecord::new(&ev, owners[o].as_ref())).line());
        }
    }
}
