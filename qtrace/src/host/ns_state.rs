//! Per-namespace kernel state besides the listeners: the sysctls that bound
//! and govern the listen queues, and the namespace's own counters (what
//! `netstat -s` and `nstat` print). Both are per network namespace; the
//! files are read from a thread inside the namespace ([`crate::host::netns`]).

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

/// The listen-queue sysctls of one namespace; `None` where unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Settings {
    /// `net.core.somaxconn`: `listen()` clamps the backlog to it.
    pub somaxconn: Option<u32>,
    /// `net.ipv4.tcp_max_syn_backlog`: with syncookies off, SYNs are dropped
    /// once fewer than a quarter of it remain free.
    pub tcp_max_syn_backlog: Option<u32>,
    /// `net.ipv4.tcp_syncookies`: 0 off, 1 when the SYN queue is full, 2 always.
    pub tcp_syncookies: Option<u32>,
    /// `net.ipv4.tcp_abort_on_overflow`: 1 resets clients whose final ACK
    /// finds the accept queue full; 0 drops the ACK silently.
    pub tcp_abort_on_overflow: Option<u32>,
}

impl Settings {
    /// Reads the calling thread's namespace's settings.
    pub(crate) fn read() -> Self {
        let get = |path: &str| std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok());
        Self {
            somaxconn: get("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: get("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            tcp_syncookies: get("/proc/sys/net/ipv4/tcp_syncookies"),
            tcp_abort_on_overflow: get("/proc/sys/net/ipv4/tcp_abort_on_overflow"),
        }
    }

    /// One line for people: `somaxconn 4096  tcp_max_syn_backlog 512 ...`.
    pub(crate) fn line(&self) -> String {
        let show = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!(
            "somaxconn {}  tcp_max_syn_backlog {}  tcp_syncookies {}  tcp_abort_on_overflow {}",
            show(self.somaxconn),
            show(self.tcp_max_syn_backlog),
            show(self.tcp_syncookies),
            show(self.tcp_abort_on_overflow)
        )
    }
}

/// The namespace's listen-queue counters, named as the kernel names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct NetCounters {
    /// TcpExt: a SYN or final ACK found the accept queue full.
    #[serde(rename = "ListenOverflows")]
    pub listen_overflows: u64,
    /// TcpExt: every `tcp_listendrop()` (overflows and other listener drops).
    #[serde(rename = "ListenDrops")]
    pub listen_drops: u64,
    /// TcpExt: SYNs dropped because the SYN queue was full (syncookies off).
    #[serde(rename = "TCPReqQFullDrop")]
    pub req_qfull_drop: u64,
    /// TcpExt: SYNs answered with a syncookie because the SYN queue was full.
    #[serde(rename = "TCPReqQFullDoCookies")]
    pub req_qfull_do_cookies: u64,
    /// TcpExt: SYN and SYN-ACK retransmissions.
    #[serde(rename = "TCPSynRetrans")]
    pub syn_retrans: u64,
    /// Tcp: resets sent.
    #[serde(rename = "OutRsts")]
    pub out_rsts: u64,
}

impl NetCounters {
    /// Reads the calling thread's namespace's counters.
    pub(crate) fn read() -> io::Result<Self> {
        let mut all = BTreeMap::new();
        parse_snmp(&std::fs::read_to_string("/proc/thread-self/net/netstat")?, &mut all);
        parse_snmp(&std::fs::read_to_string("/proc/thread-self/net/snmp")?, &mut all);
        Ok(Self::from_map(&all))
    }

    pub(crate) fn from_map(all: &BTreeMap<String, u64>) -> Self {
        let get = |k: &str| all.get(k).copied().unwrap_or(0);
        Self {
            listen_overflows: get("TcpExt:ListenOverflows"),
            listen_drops: get("TcpExt:ListenDrops"),
            req_qfull_drop: get("TcpExt:TCPReqQFullDrop"),
            req_qfull_do_cookies: get("TcpExt:TCPReqQFullDoCookies"),
            syn_retrans: get("TcpExt:TCPSynRetrans"),
            out_rsts: get("Tcp:OutRsts"),
        }
    }

    /// How much each counter grew since `before` (a counter that went
    /// backwards, which only a namespace's rebirth would do, gives 0).
    pub(crate) fn since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            listen_overflows: d(self.listen_overflows, before.listen_overflows),
            listen_drops: d(self.listen_drops, before.listen_drops),
            req_qfull_drop: d(self.req_qfull_drop, before.req_qfull_drop),
            req_qfull_do_cookies: d(self.req_qfull_do_cookies, before.req_qfull_do_cookies),
            syn_retrans: d(self.syn_retrans, before.syn_retrans),
            out_rsts: d(self.out_rsts, before.out_rsts),
        }
    }
}

/// Parses `/proc/net/netstat` or `/proc/net/snmp`: pairs of lines, names
/// then values, both prefixed with the group (`TcpExt:`). Keys come out as
/// `Group:Name`. Lines that do not pair up are skipped.
pub(crate) fn parse_snmp(text: &str, out: &mut BTreeMap<String, u64>) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((group, names)), Some((group2, values))) = (names.split_once(':'), values.split_once(':')) else {
            continue;
        };
        if group != group2 {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            // Tcp:MaxConn is -1: signed values are not counters qtrace reads.
            if let Ok(v) = value.parse() {
                out.insert(format!("{group}:{name}"), v);
            }
        }
    }
}

/// What qtrace read from one namespace.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NsState {
    pub settings: Settings,
    pub counters: NetCounters,
}

impl NsState {
    pub(crate) fn read() -> io::Result<Self> {
        Ok(Self { settings: Settings::read(), counters: NetCounters::read()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netstat_and_snmp_pairs() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop TCPSynRetrans\n\
                       TcpExt: 0 94 188 3 7 12\n\
                       IpExt: InNoRoutes\nIpExt: 0\n";
        let snmp = "Tcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 5\n";
        let mut all = BTreeMap::new();
        parse_snmp(netstat, &mut all);
        parse_snmp(snmp, &mut all);
        let c = NetCounters::from_map(&all);
        assert_eq!(
            c,
            NetCounters {
                listen_overflows: 94,
                listen_drops: 188,
                req_qfull_drop: 7,
                req_qfull_do_cookies: 3,
                syn_retrans: 12,
                out_rsts: 5
            }
        );
        assert!(!all.contains_key("Tcp:MaxConn"));
        let later = NetCounters { listen_drops: 190, ..c };
        assert_eq!(later.since(&c), NetCounters { listen_drops: 2, ..Default::default() });
        assert_eq!(c.since(&later).listen_drops, 0);
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut all = BTreeMap::new();
        for text in ["", "TcpExt:", "TcpExt: a b\nIpExt: 1 2\n", "x\ny\nz", "TcpExt: a\nTcpExt: 1 2 3\n"] {
            parse_snmp(text, &mut all);
        }
        assert_eq!(all.get("TcpExt:a"), Some(&1));
    }

    #[test]
    fn settings_line_marks_unknowns() {
        let s = Settings { somaxconn: Some(64), tcp_syncookies: Some(0), ..Default::default() };
        assert_eq!(s.line(), "somaxconn 64  tcp_max_syn_backlog ?  tcp_syncookies 0  tcp_abort_on_overflow ?");
    }
}
