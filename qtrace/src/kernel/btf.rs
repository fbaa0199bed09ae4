//! Kernel struct offsets and enum values from the running kernel's BTF.
//!
//! qtrace's programs read listener and packet state with
//! `bpf_probe_read_kernel` at offsets handed to them at load time, so one
//! binary works on every kernel from 5.10 on: nothing about struct layout is
//! frozen at compile time. This is a small reader of the BTF format
//! (`include/uapi/linux/btf.h`) that answers exactly two questions: the byte
//! offset and size of a member path such as `sock.__sk_common.skc_net`
//! (looking through anonymous structs and unions, as C does), and the
//! parameter names of a kernel function (its `FUNC_PROTO`). Enum values
//! (drop reasons) come from tracepoint formats instead (`offsets`).

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
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub(crate) enum BtfError {
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
    #[error("function {0} not found in the kernel's BTF")]
    NoFunc(String),
}

/// A parsed BTF blob (for example `/sys/kernel/btf/vmlinux`).
///
/// Parsing only walks the type records to index where each one starts (one
/// pass, no allocation per type): a 6.18 vmlinux has some 150,000 types and
/// qtrace asks about a handful, so records are decoded when asked about.
pub(crate) struct Btf {
    data: Vec<u8>,
    /// Where the type and string sections lie in `data`.
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Start of each type's record within the type section, by type id
    /// (index 0 is BTF's `void` and has none).
    offsets: Vec<u32>,
}

/// One type record's fixed part and its trailing entries.
#[derive(Clone, Copy)]
struct Rec<'a> {
    name: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    /// The bytes after the 12-byte header (members, enumerators, ...).
    tail: &'a [u8],
}

/// A struct or union member.
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

/// Where a member lives inside its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub offset: u32,
    pub size: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Bytes of a record's trailing part, by kind (`include/uapi/linux/btf.h`).
fn tail_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        _ => return None,
    })
}

impl Btf {
    /// Reads a BTF file (a kernel's `/sys/kernel/btf/vmlinux`, or one
    /// extracted for a kernel that does not publish its own).
    pub(crate) fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let data = std::fs::read(path)?;
        Self::parse(data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Parses little-endian BTF (the only kind x86_64 and arm64 kernels emit).
    pub(crate) fn parse(data: impl Into<Vec<u8>>) -> Result<Self, BtfError> {
        let data = data.into();
        if u16_at(&data, 0) != Some(BTF_MAGIC) {
            return Err(BtfError::BadHeader);
        }
        let field = |at| u32_at(&data, at).map(|v| v as usize).ok_or(BtfError::BadHeader);
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if data.get(types.clone()).is_none() || data.get(strings.clone()).is_none() {
            return Err(BtfError::BadHeader);
        }
        let t = &data[types.clone()];
        let mut offsets = vec![0u32];
        let mut at = 0usize;
        while at < t.len() {
            let info = u32_at(t, at + 4).ok_or(BtfError::BadType(u32::MAX))?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let len = 12 + tail_len(kind, vlen).ok_or(BtfError::BadType(kind))?;
            if at + len > t.len() {
                return Err(BtfError::BadType(u32::MAX));
            }
            offsets.push(at as u32);
            at += len;
        }
        Ok(Self { data, types, strings, offsets })
    }

    fn rec(&self, id: u32) -> Option<Rec<'_>> {
        let at = *self.offsets.get(id as usize).filter(|_| id != 0)? as usize;
        let t = &self.data[self.types.clone()];
        let info = u32_at(t, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let tail = t.get(at + 12..at + 12 + tail_len(kind, vlen)?)?;
        Some(Rec { name: u32_at(t, at)?, kind, vlen, kind_flag: info >> 31 == 1, size_or_type: u32_at(t, at + 8)?, tail })
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.data[self.strings.clone()].get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Every record, with its id.
    fn all(&self) -> impl Iterator<Item = (u32, Rec<'_>)> {
        (1..self.offsets.len() as u32).filter_map(|id| Some((id, self.rec(id)?)))
    }

    /// The first type of `kind` named `name`.
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        self.all().find(|(_, r)| r.kind == kind && r.name != 0 && self.str_at(r.name) == name).map(|(id, _)| id)
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Rec<'_>> {
        for _ in 0..32 {
            let r = self.rec(id)?;
            match r.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = r.size_or_type,
                _ => return Some(r),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> u32 {
        match self.resolve(id) {
            Some(r) if matches!(r.kind, KIND_INT | KIND_FLOAT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION) => r.size_or_type,
            Some(r) if r.kind == KIND_PTR => 8,
            Some(r) if r.kind == KIND_ARRAY => {
                let (elem, len) = (u32_at(r.tail, 0).unwrap_or(0), u32_at(r.tail, 8).unwrap_or(0));
                self.size_of(elem) * len
            }
            _ => 0,
        }
    }

    fn members(r: Rec<'_>) -> impl Iterator<Item = Member> + '_ {
        r.tail.chunks_exact(12).take(r.vlen).map(move |m| {
            let off = u32_at(m, 8).unwrap_or(0);
            let (bit_offset, bitfield_size) = if r.kind_flag { (off & 0xff_ffff, off >> 24) } else { (off, 0) };
            Member { name: u32_at(m, 0).unwrap_or(0), type_id: u32_at(m, 4).unwrap_or(0), bit_offset, bitfield_size }
        })
    }

    fn composite(&self, id: u32) -> Option<Rec<'_>> {
        self.resolve(id).filter(|r| matches!(r.kind, KIND_STRUCT | KIND_UNION))
    }

    /// Finds `name` among the members of `owner`, descending into anonymous
    /// structs and unions. Returns (bit offset from the start of `owner`, member).
    fn find_member(&self, owner: Rec<'_>, name: &str, depth: u32) -> Option<(u32, Member)> {
        if let Some(m) = Self::members(owner).find(|m| m.name != 0 && self.str_at(m.name) == name) {
            return Some((m.bit_offset, m));
        }
        if depth > 8 {
            return None;
        }
        Self::members(owner).filter(|m| m.name == 0).find_map(|m| {
            let inner = self.composite(m.type_id)?;
            self.find_member(inner, name, depth + 1).map(|(off, found)| (m.bit_offset + off, found))
        })
    }

    /// Byte offset and size of `path` (dot-separated members) inside struct
    /// `root`, for example `field("sock", "__sk_common.skc_net")`.
    pub(crate) fn field(&self, root: &str, path: &str) -> Result<Field, BtfError> {
        let mut id = self.find(KIND_STRUCT, root).ok_or_else(|| BtfError::NoStruct(root.to_owned()))?;
        let mut bits = 0u32;
        let mut within = format!("struct {root}");
        for part in path.split('.') {
            let no_member = || BtfError::NoMember { within: within.clone(), member: part.to_owned() };
            let owner = self.composite(id).ok_or_else(no_member)?;
            let (off, member) = self.find_member(owner, part, 0).ok_or_else(no_member)?;
            if member.bitfield_size != 0 || off % 8 != 0 {
                return Err(BtfError::Bitfield(format!("{within}.{part}")));
            }
            bits += off;
            id = member.type_id;
            within = format!("{within}.{part}");
        }
        Ok(Field { offset: bits / 8, size: self.size_of(id) })
    }

    /// The value of enumerator `name`, in whichever 32-bit enum declares
    /// it: the kernel's MIB indexes (`LINUX_MIB_*`) are an anonymous enum.
    pub(crate) fn enumerator(&self, name: &str) -> Option<i64> {
        self.all().filter(|(_, r)| r.kind == KIND_ENUM).find_map(|(_, r)| {
            let e = r.tail.chunks_exact(8).take(r.vlen).find(|e| self.str_at(u32_at(e, 0).unwrap_or(0)) == name)?;
            let v = u32_at(e, 4)?;
            // kind_flag marks a signed enum.
            Some(if r.kind_flag { i64::from(v as i32) } else { i64::from(v) })
        })
    }

    /// Type id of the kernel function `name` (what fentry attaches to).
    pub(crate) fn func_id(&self, name: &str) -> Option<u32> {
        self.find(KIND_FUNC, name)
    }

    /// The parameter names of each kernel function in `names`, in order
    /// (from its `FUNC_PROTO`; an unnamed parameter is an empty string).
    /// One walk over the types for all of them: functions come late in a
    /// vmlinux's BTF, and each walk costs some 2 ms on 6.18.
    pub(crate) fn func_params<const N: usize>(&self, names: [&str; N]) -> [Result<Vec<&str>, BtfError>; N] {
        let mut ids = [None; N];
        for (id, r) in self.all().filter(|(_, r)| r.kind == KIND_FUNC && r.name != 0) {
            let name = self.str_at(r.name);
            if let Some(i) = names.iter().position(|n| *n == name) {
                ids[i] = ids[i].or(Some(id));
            }
        }
        std::array::from_fn(|i| {
            let func = ids[i].and_then(|id| self.rec(id)).ok_or_else(|| BtfError::NoFunc(names[i].to_owned()))?;
            let proto = self.rec(func.size_or_type).filter(|r| r.kind == KIND_FUNC_PROTO).ok_or(BtfError::BadType(KIND_FUNC))?;
            Ok(proto.tail.chunks_exact(8).take(proto.vlen).map(|p| self.str_at(u32_at(p, 0).unwrap_or(0))).collect())
        })
    }
}

/// Builds BTF blobs for tests: kernel functions with the prototypes
/// different kernels give them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    #[derive(Default)]
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self { types: Vec::new(), strings: vec![0], next_id: 1 }
        }

        fn name(&mut self, s: &str) -> u32 {
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }

        fn push(&mut self, words: &[u32]) -> u32 {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        /// `void *`-like pointer: enough for a parameter's type.
        fn pointer(&mut self) -> u32 {
            self.push(&[0, KIND_PTR << 24, 0])
        }

        /// A function `name(params...)` returning a pointer: its FUNC_PROTO,
        /// then its FUNC.
        pub(crate) fn func(mut self, name: &str, params: &[&str]) -> Self {
            let ptr = self.pointer();
            let mut words = vec![0, KIND_FUNC_PROTO << 24 | params.len() as u32, ptr];
            for p in params {
                words.extend([self.name(p), ptr]);
            }
            let proto = self.push(&words);
            let n = self.name(name);
            self.push(&[n, KIND_FUNC << 24 | 1, proto]);
            self
        }

        pub(crate) fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [24, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
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
    fn reads_enumerators() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.enumerator("E_FORTY"), Some(40));
        assert_eq!(btf.enumerator("E_ONE"), Some(1));
        assert_eq!(btf.enumerator("E_NONE"), None);
    }

    #[test]
    fn resolves_members_through_anonymous_unions_and_aliases() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.field("outer", "a").unwrap(), Field { offset: 0, size: 4 });
        assert_eq!(btf.field("outer", "y").unwrap(), Field { offset: 10, size: 2 });
        assert_eq!(btf.field("outer", "z").unwrap(), Field { offset: 8, size: 8 });
        assert_eq!(btf.field("outer", "in.d").unwrap(), Field { offset: 20, size: 4 });
        assert_eq!(btf.field("outer", "in").unwrap(), Field { offset: 16, size: 8 });
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.field("nope", "a"), Err(BtfError::NoStruct("nope".into())));
        assert_eq!(btf.field("outer", "in.q"), Err(BtfError::NoMember { within: "struct outer.in".into(), member: "q".into() }));
        assert_eq!(btf.field("outer", "a.b").unwrap_err().to_string(), "member b not found in struct outer.a");
    }

    #[test]
    fn function_parameters_by_name() {
        let btf = Btf::parse(testing::Builder::new().func("f", &["sk", "", "skb"]).build()).unwrap();
        let [f, g] = btf.func_params(["f", "g"]);
        assert_eq!(f.unwrap(), vec!["sk", "", "skb"]);
        assert_eq!(g, Err(BtfError::NoFunc("g".into())));
        assert!(btf.func_id("f").is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Btf::parse(Vec::new()).err(), Some(BtfError::BadHeader));
        assert_eq!(Btf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).err(), Some(BtfError::BadHeader));
        let mut blob = sample();
        for cut in [30, 50, 100, blob.len() - 10] {
            let mut hdr = blob.clone();
            hdr.truncate(cut);
            let _ = Btf::parse(hdr);
        }
        blob[24 + 7] = 0x7f; // first type's kind byte -> unknown kind
        assert!(Btf::parse(blob).is_err());
    }

    /// The running kernel's BTF, where it exists (readable without root on
    /// most distributions): every offset the programs are given resolves.
    #[test]
    fn running_kernel_has_what_qtrace_reads() {
        let Ok(btf) = Btf::from_file(std::path::Path::new("/sys/kernel/btf/vmlinux")) else {
            eprintln!("no /sys/kernel/btf/vmlinux on this machine: covered by the VM matrix");
            return;
        };
        let mut cfg = qtrace_common::Config::empty();
        crate::kernel::offsets::from_btf(&btf, &mut cfg).unwrap_or_else(|e| panic!("{e:#}"));
        assert_ne!(cfg.sk_drops, qtrace_common::OFFSET_NONE);
    }
}
