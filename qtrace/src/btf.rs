//! Kernel struct offsets and enum values from the running kernel's BTF.
//!
//! qtrace's programs read listener and packet state with
//! `bpf_probe_read_kernel` at offsets handed to them at load time, so one
//! binary works on every kernel from 5.10 on: nothing about struct layout is
//! frozen at compile time. This is a small reader of the BTF format
//! (`include/uapi/linux/btf.h`) that answers exactly two questions: the byte
//! offset and size of a member path such as `sock.__sk_common.skc_net`
//! (looking through anonymous structs and unions, as C does), and the value of
//! an enumerator such as `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`.

use std::collections::HashMap;

use thiserror::Error;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why a BTF question has no answer. Callers match on these to tell "this
/// kernel lacks the member" (a capability) from "the BTF is broken".
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic or truncated header)")]
    BadHeader,
    #[error("BTF type section is truncated or has an unknown kind {0}")]
    BadType(u32),
    #[error("struct {0} not found in the kernel's BTF")]
    NoStruct(String),
    #[error("member {member} not found in {within}")]
    NoMember { within: String, member: String },
    #[error("{0} is a bitfield; qtrace reads whole bytes only")]
    Bitfield(String),
    #[error("enumerator {0} not found in the kernel's BTF")]
    NoEnumerator(String),
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// int, float, enum: a scalar with a size in bytes.
    Scalar {
        size: u32,
    },
    Ptr,
    Array {
        elem: u32,
        len: u32,
    },
    Composite {
        name: u32,
        size: u32,
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: see through.
    Alias {
        target: u32,
    },
    Other,
}

/// A parsed BTF blob (for example `/sys/kernel/btf/vmlinux`).
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is BTF's `void`.
    types: Vec<Type>,
    /// Enumerator name -> value, for ENUM and ENUM64.
    enumerators: HashMap<String, i64>,
    /// Struct name -> first type id with that name.
    structs: HashMap<String, u32>,
}

/// Where a member lives inside its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Self> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Self::parse(&data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Parses little-endian BTF (the only kind x86_64 and arm64 kernels emit).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0) != Some(BTF_MAGIC) {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(data, 4).ok_or(BtfError::BadHeader)? as usize;
        let field = |at| u32_at(data, at).map(|v| v as usize).ok_or(BtfError::BadHeader);
        let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
        let types_bytes = data.get(hdr_len + type_off..hdr_len + type_off + type_len).ok_or(BtfError::BadHeader)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or(BtfError::BadHeader)?.to_vec();

        let mut btf = Btf { strings, types: vec![Type::Other], enumerators: HashMap::new(), structs: HashMap::new() };
        let mut at = 0usize;
        let t = types_bytes;
        while at < t.len() {
            let bad = || BtfError::BadType(u32::MAX);
            let name = u32_at(t, at).ok_or_else(bad)?;
            let info = u32_at(t, at + 4).ok_or_else(bad)?;
            let size_or_type = u32_at(t, at + 8).ok_or_else(bad)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let ty = match kind {
                KIND_INT => {
                    at += 4;
                    Type::Scalar { size: size_or_type }
                }
                KIND_FLOAT => Type::Scalar { size: size_or_type },
                KIND_PTR => Type::Ptr,
                KIND_ARRAY => {
                    let elem = u32_at(t, at).ok_or_else(bad)?;
                    let len = u32_at(t, at + 8).ok_or_else(bad)?;
                    at += 12;
                    Type::Array { elem, len }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let m_name = u32_at(t, at).ok_or_else(bad)?;
                        let m_type = u32_at(t, at + 4).ok_or_else(bad)?;
                        let m_off = u32_at(t, at + 8).ok_or_else(bad)?;
                        let (bit_offset, bitfield_size) = if kind_flag { (m_off & 0xff_ffff, m_off >> 24) } else { (m_off, 0) };
                        members.push(Member { name: m_name, type_id: m_type, bit_offset, bitfield_size });
                        at += 12;
                    }
                    if kind == KIND_STRUCT && name != 0 {
                        let id = btf.types.len() as u32;
                        btf.structs.entry(btf.str_at(name).to_owned()).or_insert(id);
                    }
                    Type::Composite { name, size: size_or_type, members }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let e_name = u32_at(t, at).ok_or_else(bad)?;
                        let e_val = u32_at(t, at + 4).ok_or_else(bad)? as i32;
                        btf.enumerators.insert(btf.str_at(e_name).to_owned(), i64::from(e_val));
                        at += 8;
                    }
                    Type::Scalar { size: size_or_type }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let e_name = u32_at(t, at).ok_or_else(bad)?;
                        let lo = u32_at(t, at + 4).ok_or_else(bad)?;
                        let hi = u32_at(t, at + 8).ok_or_else(bad)?;
                        let v = (u64::from(hi) << 32 | u64::from(lo)) as i64;
                        btf.enumerators.insert(btf.str_at(e_name).to_owned(), v);
                        at += 12;
                    }
                    Type::Scalar { size: size_or_type }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => Type::Alias { target: size_or_type },
                KIND_FWD | KIND_FUNC => Type::Other,
                KIND_FUNC_PROTO => {
                    at += 8 * vlen;
                    Type::Other
                }
                KIND_VAR | KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    at += 12 * vlen;
                    Type::Other
                }
                other => return Err(BtfError::BadType(other)),
            };
            btf.types.push(ty);
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias { target } => id = *target,
                ty => return Some(ty),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> u32 {
        match self.resolve(id) {
            Some(Type::Scalar { size }) | Some(Type::Composite { size, .. }) => *size,
            Some(Type::Ptr) => 8,
            Some(Type::Array { elem, len }) => self.size_of(*elem) * len,
            _ => 0,
        }
    }

    /// Finds `name` among `members`, descending into anonymous structs and
    /// unions. Returns (bit offset from the start of `members`' owner, member).
    fn find_member<'a>(&'a self, members: &'a [Member], name: &str) -> Option<(u32, &'a Member)> {
        for m in members {
            if m.name != 0 && self.str_at(m.name) == name {
                return Some((m.bit_offset, m));
            }
        }
        for m in members.iter().filter(|m| m.name == 0) {
            if let Some(Type::Composite { members: inner, .. }) = self.resolve(m.type_id) {
                if let Some((off, found)) = self.find_member(inner, name) {
                    return Some((m.bit_offset + off, found));
                }
            }
        }
        None
    }

    /// Byte offset and size of `path` (dot-separated members) inside struct
    /// `root`, for example `field("sock", "__sk_common.skc_net")`.
    pub fn field(&self, root: &str, path: &str) -> Result<Field, BtfError> {
        let mut id = *self.structs.get(root).ok_or_else(|| BtfError::NoStruct(root.to_owned()))?;
        let mut bits = 0u32;
        let mut within = format!("struct {root}");
        for part in path.split('.') {
            let no_member = || BtfError::NoMember { within: within.clone(), member: part.to_owned() };
            let Some(Type::Composite { members, .. }) = self.resolve(id) else {
                return Err(no_member());
            };
            let (off, member) = self.find_member(members, part).ok_or_else(no_member)?;
            if member.bitfield_size != 0 || off % 8 != 0 {
                return Err(BtfError::Bitfield(format!("{within}.{part}")));
            }
            bits += off;
            id = member.type_id;
            within = format!("{within}.{part}");
        }
        Ok(Field { offset: bits / 8, size: self.size_of(id) })
    }

    /// Value of an enumerator, for example `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW`.
    pub fn enumerator(&self, name: &str) -> Result<i64, BtfError> {
        self.enumerators.get(name).copied().ok_or_else(|| BtfError::NoEnumerator(name.to_owned()))
    }

    /// Name of a composite type.
    pub fn struct_name(&self, id: u32) -> Option<&str> {
        match self.types.get(id as usize)? {
            Type::Composite { name, .. } => Some(self.str_at(*name)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob by hand:
    /// `struct outer { int a; union { struct { short x; short y; }; long z; }; struct inner in; }`
    /// `struct inner { char c; int d; }`, `enum e { E_ONE = 1, E_FORTY = 40 }`.
    fn sample() -> Vec<u8> {
        let mut strings = b"\0int\0outer\0a\0x\0y\0z\0inner\0in\0c\0d\0short\0long\0char\0E_ONE\0E_FORTY\0e\0".to_vec();
        let off = |s: &str, strings: &[u8]| {
            let needle = format!("\0{s}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut t = Vec::new();
        let push = |t: &mut Vec<u8>, vals: &[u32]| {
            for v in vals {
                t.extend_from_slice(&v.to_le_bytes());
            }
        };
        let info = |kind: u32, vlen: u32| kind << 24 | vlen;
        // 1: int (4 bytes)
        push(&mut t, &[off("int", &strings), info(KIND_INT, 0), 4, 32]);
        // 2: short
        push(&mut t, &[off("short", &strings), info(KIND_INT, 0), 2, 16]);
        // 3: long
        push(&mut t, &[off("long", &strings), info(KIND_INT, 0), 8, 64]);
        // 4: char
        push(&mut t, &[off("char", &strings), info(KIND_INT, 0), 1, 8]);
        // 5: anonymous struct { short x; short y; }
        push(&mut t, &[0, info(KIND_STRUCT, 2), 4]);
        push(&mut t, &[off("x", &strings), 2, 0, off("y", &strings), 2, 16]);
        // 6: anonymous union { struct {x,y}; long z; }
        push(&mut t, &[0, info(KIND_UNION, 2), 8]);
        push(&mut t, &[0, 5, 0, off("z", &strings), 3, 0]);
        // 7: struct inner { char c; int d; }
        push(&mut t, &[off("inner", &strings), info(KIND_STRUCT, 2), 8]);
        push(&mut t, &[off("c", &strings), 4, 0, off("d", &strings), 1, 32]);
        // 8: const struct inner (an alias to see through)
        push(&mut t, &[0, info(KIND_CONST, 0), 7]);
        // 9: struct outer { int a; union; const struct inner in; }
        push(&mut t, &[off("outer", &strings), info(KIND_STRUCT, 3), 24]);
        push(&mut t, &[off("a", &strings), 1, 0, 0, 6, 64, off("in", &strings), 8, 128]);
        // 10: enum e
        push(&mut t, &[off("e", &strings), info(KIND_ENUM, 2), 4]);
        push(&mut t, &[off("E_ONE", &strings), 1, off("E_FORTY", &strings), 40]);

        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&t);
        out.append(&mut strings);
        out
    }

    #[test]
    fn resolves_members_through_anonymous_unions_and_aliases() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.struct_name(9), Some("outer"));
        assert_eq!(btf.field("outer", "a").unwrap(), Field { offset: 0, size: 4 });
        assert_eq!(btf.field("outer", "y").unwrap(), Field { offset: 10, size: 2 });
        assert_eq!(btf.field("outer", "z").unwrap(), Field { offset: 8, size: 8 });
        assert_eq!(btf.field("outer", "in.d").unwrap(), Field { offset: 20, size: 4 });
        assert_eq!(btf.field("outer", "in").unwrap(), Field { offset: 16, size: 8 });
        assert_eq!(btf.enumerator("E_FORTY").unwrap(), 40);
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.field("nope", "a"), Err(BtfError::NoStruct("nope".into())));
        assert_eq!(btf.field("outer", "in.q"), Err(BtfError::NoMember { within: "struct outer.in".into(), member: "q".into() }));
        assert_eq!(btf.field("outer", "a.b").unwrap_err().to_string(), "member b not found in struct outer.a");
        assert!(btf.enumerator("E_TWO").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Btf::parse(&[]).err(), Some(BtfError::BadHeader));
        assert_eq!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).err(), Some(BtfError::BadHeader));
        let mut blob = sample();
        for cut in [30, 50, 100, blob.len() - 10] {
            let mut hdr = blob.clone();
            hdr.truncate(cut);
            let _ = Btf::parse(&hdr);
        }
        blob[24 + 7] = 0x7f; // first type's kind byte -> unknown kind
        assert!(Btf::parse(&blob).is_err());
    }

    /// The running kernel's BTF, where it exists (readable without root on
    /// most distributions): every offset the programs are given resolves.
    #[test]
    fn running_kernel_has_what_qtrace_reads() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux on this machine: covered by the VM matrix");
            return;
        };
        let mut cfg = qtrace_common::Config::empty();
        crate::offsets::from_btf(&btf, &mut cfg).unwrap_or_else(|e| panic!("{e:#}"));
        assert_ne!(cfg.sk_drops, qtrace_common::OFFSET_NONE);
    }
}
