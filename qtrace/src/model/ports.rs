//! `--port` values: single ports and inclusive ranges (`8000-8100`).

use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortError {
    #[error("{0:?} is not a port number (1-65535) or a range like 8000-8100")]
    NotANumber(String),
    #[error("port {0} is out of range (1-65535)")]
    OutOfRange(u64),
    #[error("range {0}-{1} is reversed; write {1}-{0}")]
    Reversed(u16, u16),
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

fn port(s: &str) -> Result<u16, PortError> {
    let n: u64 = s.trim().parse().map_err(|_| PortError::NotANumber(s.to_owned()))?;
    if n == 0 || n > 65535 {
        return Err(PortError::OutOfRange(n));
    }
    Ok(n as u16)
}

impl FromStr for PortRange {
    type Err = PortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(PortError::Reversed(first, last));
                }
                Ok(Self { first, last })
            }
            None => port(s).map(|p| Self { first: p, last: p }),
        }
    }
}

/// The watched ports; empty means every port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<PortRange>,
}

impl PortSet {
    pub fn new(ranges: Vec<PortRange>) -> Self {
        Self { ranges }
    }
    pub fn is_all(&self) -> bool {
        self.ranges.is_empty()
    }
    pub fn contains(&self, port: u16) -> bool {
        self.is_all() || self.ranges.iter().any(|r| (r.first..=r.last).contains(&port))
    }
    /// Every port named (with repeats if ranges overlap).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|r| r.first..=r.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("8080".parse(), Ok(PortRange { first: 8080, last: 8080 }));
        assert_eq!("8000-8100".parse(), Ok(PortRange { first: 8000, last: 8100 }));
        assert_eq!("1-65535".parse(), Ok(PortRange { first: 1, last: 65535 }));
        let set = PortSet::new(vec!["80".parse().unwrap(), "8000-8002".parse().unwrap()]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![80, 8000, 8001, 8002]);
        assert!(set.contains(8001) && !set.contains(8003) && !set.contains(81));
        assert!(PortSet::default().contains(1) && PortSet::default().is_all());
    }

    #[test]
    fn rejects_bad_ports_with_a_clear_reason() {
        assert_eq!("0".parse::<PortRange>(), Err(PortError::OutOfRange(0)));
        assert_eq!("65536".parse::<PortRange>(), Err(PortError::OutOfRange(65536)));
        assert_eq!("abc".parse::<PortRange>(), Err(PortError::NotANumber("abc".into())));
        assert_eq!("9-1".parse::<PortRange>(), Err(PortError::Reversed(9, 1)));
        assert_eq!("-5".parse::<PortRange>(), Err(PortError::NotANumber("".into())));
        assert_eq!(
            "99999999999999999999".parse::<PortRange>().unwrap_err().to_string(),
            "\"99999999999999999999\" is not a port number (1-65535) or a range like 8000-8100"
        );
        assert_eq!("9-1".parse::<PortRange>().unwrap_err().to_string(), "range 9-1 is reversed; write 1-9");
    }
}
