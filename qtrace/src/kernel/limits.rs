//! What an attached tier cannot see on this kernel, why each better tier
//! was refused, and which listeners' owners the host will not let qtrace
//! name: typed, with a stable id for JSON (the `start` record) and a
//! sentence for people (stderr, doctor's report).

use std::fmt;

use serde::Serialize;

use crate::kernel::probe::Tier;

/// A better tier that could not attach, and the kernel's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub tier: Tier,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tier unavailable: {}", self.tier, self.reason)
    }
}

/// One thing the attached programs cannot see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// Tracepoint tier: SYN-stage drops and syncookie-ACK overflows have no
    /// tracepoint (`tcp_conn_request` ends in `consume_skb`).
    SynStageCounted,
    /// Tracepoint tier: ACK-stage overflows are not seen one by one either.
    AckDetailMissing(String),
    /// Tracepoint tier before `rx_sk` (6.11): a listener's drop counter
    /// also moves for request packets that are not listen drops.
    CountedUpperBound,
    /// The listener-close recorder could not attach.
    ClosedListenersMissing(String),
    /// The `listen(2)` recorders could not attach.
    ListenCallsMissing(String),
    /// Accept-queue waits are not measured (the child-socket or
    /// `accept()` recorders could not attach).
    AcceptWaitMissing(String),
    /// qtrace lacks the capabilities that name other users' processes
    /// (which ones, in the reason).
    OwnersPartial(String),
    /// Owners are not resolved at all (`--no-owner`).
    OwnersOff,
}

impl Limit {
    /// The stable JSON id.
    pub fn id(&self) -> &'static str {
        match self {
            Limit::SynStageCounted => "syn_stage_counted",
            Limit::AckDetailMissing(_) => "ack_detail_missing",
            Limit::CountedUpperBound => "counted_upper_bound",
            Limit::ClosedListenersMissing(_) => "closed_listeners_missing",
            Limit::ListenCallsMissing(_) => "listen_calls_missing",
            Limit::AcceptWaitMissing(_) => "accept_wait_missing",
            Limit::OwnersPartial(_) => "owners_partial",
            Limit::OwnersOff => "owners_off",
        }
    }

    /// The kernel's reason, where there is one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Limit::AckDetailMissing(why)
            | Limit::ClosedListenersMissing(why)
            | Limit::ListenCallsMissing(why)
            | Limit::AcceptWaitMissing(why)
            | Limit::OwnersPartial(why) => Some(why),
            Limit::SynStageCounted | Limit::CountedUpperBound | Limit::OwnersOff => None,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::SynStageCounted => f.write_str("SYN-stage drops and syncookie-ACK overflows have no hook on the tracepoint tier: they are counted from each listener's drop counter (kind listener_drop_counted), without per-connection detail or outcome; syncookies sent are not drops and move no counter per listener, so they are not seen at all"),
            Limit::AckDetailMissing(why) => write!(f, "{why}: ACK-stage overflows are counted from the listeners too, without outcomes"),
            Limit::CountedUpperBound => f.write_str("on this kernel a listener's drop counter also moves for request packets that are not listen drops (each overflowing final ACK a second time, TCP_DEFER_ACCEPT's bare ACKs): counted drops are an upper bound"),
            Limit::ClosedListenersMissing(why) => write!(f, "listeners' final drop counters are not recorded as they close ({why}): drops in a listener's last second may be missing, and connections with drops have no outcome"),
            Limit::ListenCallsMissing(why) => write!(f, "requested backlogs are not recorded ({why}): a clamp by somaxconn can only be inferred"),
            Limit::AcceptWaitMissing(why) => write!(f, "accept-queue waits are not measured ({why})"),
            Limit::OwnersPartial(why) => write!(f, "{why}: a listener held only by other users' processes has no owner (reading another user's /proc/PID/fd takes CAP_SYS_PTRACE, and listing it CAP_DAC_READ_SEARCH); its records say so in owner.unknown"),
            Limit::OwnersOff => f.write_str("listeners' owners are not named (--no-owner): records carry no owner and the metrics no qtrace_listener_info"),
        }
    }
}

/// A limit as the `start` record carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LimitRecord {
    pub id: &'static str,
    pub reason: Option<String>,
    pub text: String,
}

impl From<&Limit> for LimitRecord {
    fn from(l: &Limit) -> Self {
        Self { id: l.id(), reason: l.reason().map(str::to_owned), text: l.to_string() }
    }
}

/// What the attached tier lacks, in the order people read them.
pub(crate) fn of_attachment(
    tier: Tier,
    ack_detail_missing: Option<String>,
    counted_upper_bound: bool,
    closed: Option<String>,
    listen_calls: Option<String>,
    accept_wait: Option<String>,
) -> Vec<Limit> {
    let mut out = Vec::new();
    if tier == Tier::Tracepoint {
        out.push(Limit::SynStageCounted);
        out.extend(ack_detail_missing.map(Limit::AckDetailMissing));
        if counted_upper_bound {
            out.push(Limit::CountedUpperBound);
        }
    }
    out.extend(closed.map(Limit::ClosedListenersMissing));
    out.extend(listen_calls.map(Limit::ListenCallsMissing));
    out.extend(accept_wait.map(Limit::AcceptWaitMissing));
    out
}
