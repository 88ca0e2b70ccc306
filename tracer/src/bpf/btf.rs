//! Where a field of a kernel structure is, read from the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`): the byte offset of a member path such as
//! `task_struct` → `thread` → `fsbase`, for the programs that read the
//! current task (aya-obj parses BTF but does not expose struct members);
//! and the names of an enumeration's values (the eBPF helpers this kernel
//! has, in `bpf_func_id`). Reads only the type section's structures and
//! enumerations, and the string section.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// A structure or union member: its name, type id and bit offset.
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

/// One type of the section: what the lookup needs of it.
enum Type {
    Aggregate {
        name: u32,
        members: Vec<Member>,
    },
    /// A typedef or qualifier: the type it names.
    Alias(u32),
    /// An enumeration: its name and its values' names.
    Enum {
        name: u32,
        values: Vec<u32>,
    },
    Other,
}

/// The kernel's types, by id (id 0 is void).
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// The running kernel's BTF, read once.
    pub fn kernel() -> Option<&'static Btf> {
        static KERNEL: std::sync::OnceLock<Option<Btf>> = std::sync::OnceLock::new();
        KERNEL
            .get_or_init(|| Btf::parse(&std::fs::read("/sys/kernel/btf/vmlinux").ok()?))
            .as_ref()
    }

    /// Parses raw BTF (little-endian); None when it is not BTF or a type
    /// of an unknown kind makes the rest unreadable.
    pub fn parse(data: &[u8]) -> Option<Btf> {
        if u16::from_le_bytes(data.get(..2)?.try_into().ok()?) != MAGIC {
            return None;
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)?
            .to_vec();
        let mut types = vec![Type::Other];
        let mut at = 0;
        while at + 12 <= types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            let (vlen, kind, kind_flag) = (
                (info & 0xffff) as usize,
                (info >> 24) & 0x1f,
                info >> 31 != 0,
            );
            at += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return None,
            };
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => Type::Aggregate {
                    name,
                    members: (0..vlen)
                        .map(|i| {
                            let m = at + 12 * i;
                            let offset = u32_at(types_data, m + 8).unwrap_or(0);
                            Member {
                                name: u32_at(types_data, m).unwrap_or(0),
                                ty: u32_at(types_data, m + 4).unwrap_or(0),
                                bit_offset: if kind_flag {
                                    offset & 0xff_ffff
                                } else {
                                    offset
                                },
                            }
                        })
                        .collect(),
                },
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                KIND_ENUM | KIND_ENUM64 => Type::Enum {
                    name,
                    values: (0..vlen)
                        .map(|i| u32_at(types_data, at + (extra / vlen.max(1)) * i).unwrap_or(0))
                        .collect(),
                },
                _ => Type::Other,
            };
            types.push(ty);
            at += extra;
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if let Type::Aggregate { name, .. } = ty {
                if *name != 0 {
                    let name = btf.string(*name).to_string();
                    btf.by_name.entry(name).or_insert(id as u32);
                }
            }
        }
        Some(btf)
    }

    /// The names of the values of enumeration `name`, if it is known.
    pub fn enum_values(&self, name: &str) -> Option<Vec<&str>> {
        self.types.iter().find_map(|t| match t {
            Type::Enum { name: n, values } if self.string(*n) == name => {
                Some(values.iter().map(|&v| self.string(v)).collect())
            }
            _ => None,
        })
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The type `id` names, through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.types.get(id as usize) {
                Some(Type::Alias(next)) => id = *next,
                _ => break,
            }
        }
        id
    }

    /// The byte offset of `path` (member names, outermost first) in the
    /// structure `outer`; members of anonymous structures and unions are
    /// found through them.
    pub fn offset_of(&self, outer: &str, path: &[&str]) -> Option<u64> {
        let mut id = *self.by_name.get(outer)?;
        let mut total = 0u64;
        for name in path {
            let (bits, ty) = self.member(id, name, 0)?;
            total += bits / 8;
            id = self.resolve(ty);
        }
        Some(total)
    }

    /// The bit offset and type of member `name` of aggregate `id`,
    /// searching anonymous members too (`depth` bounds that search).
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u64, u32)> {
        let Some(Type::Aggregate { members, .. }) = self.types.get(self.resolve(id) as usize)
        else {
            return None;
        };
        for m in members {
            if m.name != 0 && self.string(m.name) == name {
                return Some((u64::from(m.bit_offset), m.ty));
            }
        }
        if depth >= 4 {
            return None;
        }
        members.iter().filter(|m| m.name == 0).find_map(|m| {
            self.member(m.ty, name, depth + 1)
                .map(|(bits, ty)| (u64::from(m.bit_offset) + bits, ty))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's task_struct → thread → fsbase: where the x86-64
    /// kernel keeps a thread's fs base (and so `pthread_self()`).
    #[test]
    fn finds_the_fs_base_in_the_running_kernel() {
        let btf = Btf::kernel().expect("this machine's kernel has BTF");
        let thread = btf.offset_of("task_struct", &["thread"]).unwrap();
        let fsbase = btf.offset_of("task_struct", &["thread", "fsbase"]).unwrap();
        assert!(
            fsbase > thread && fsbase < thread + 256,
            "{thread} {fsbase}"
        );
        assert_eq!(btf.offset_of("task_struct", &["no_such_member"]), None);
        assert_eq!(btf.offset_of("no_such_struct", &["thread"]), None);
    }

    /// The running kernel's eBPF helpers, from `enum bpf_func_id`.
    #[test]
    fn reads_the_kernels_helper_names() {
        let btf = Btf::kernel().expect("this machine's kernel has BTF");
        let helpers = btf.enum_values("bpf_func_id").unwrap();
        assert_eq!(helpers.first(), Some(&"BPF_FUNC_unspec"));
        assert!(helpers.contains(&"BPF_FUNC_loop"), "{helpers:?}");
        assert_eq!(btf.enum_values("no_such_enum"), None);
    }
}
