//! One core module inside a component, read for merging: its imports, what it defines, its
//! exports and the sections to re-encode.

use std::collections::HashMap;

use wasmparser::{
    DataSectionReader, ElementSectionReader, ExternalKind, GlobalSectionReader,
    MemorySectionReader, Operator, Parser, Payload, TableSectionReader, TypeRef, TypeSectionReader,
};

use super::FlattenError;

/// The four index spaces a module imports into and merging renumbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Space {
    Func,
    Table,
    Memory,
    Global,
}

impl Space {
    const ALL: usize = 4;

    /// Its position in per-space arrays.
    fn slot(self) -> usize {
        self as usize
    }

    pub fn of_export(kind: ExternalKind) -> Option<Space> {
        match kind {
            ExternalKind::Func | ExternalKind::FuncExact => Some(Space::Func),
            ExternalKind::Table => Some(Space::Table),
            ExternalKind::Memory => Some(Space::Memory),
            ExternalKind::Global => Some(Space::Global),
            ExternalKind::Tag => None,
        }
    }

    pub fn of_import(ty: &TypeRef) -> Option<Space> {
        match ty {
            TypeRef::Func(_) | TypeRef::FuncExact(_) => Some(Space::Func),
            TypeRef::Table(_) => Some(Space::Table),
            TypeRef::Memory(_) => Some(Space::Memory),
            TypeRef::Global(_) => Some(Space::Global),
            TypeRef::Tag(_) => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Import<'a> {
    pub module: &'a str,
    pub name: &'a str,
    pub ty: TypeRef,
}

#[derive(Debug, Default)]
pub(super) struct Module<'a> {
    pub types: u32,
    pub imports: Vec<Import<'a>>,
    /// Positions in `imports` of each space's imports, in order (a space's `n`th import is
    /// what its index `n` refers to). Looked up for every index merging renumbers.
    imports_by_space: [Vec<usize>; Space::ALL],
    /// The type of each defined function.
    pub func_types: Vec<u32>,
    pub defined_tables: u32,
    pub defined_memories: u32,
    /// Each defined global's initialiser when it is immutable (a mutable one's value is not
    /// a constant).
    pub defined_globals: Vec<Option<wasmparser::ConstExpr<'a>>>,
    pub exports: HashMap<&'a str, (Space, u32)>,
    pub has_start: bool,
    /// Exception-handling tags, which merging does not renumber.
    pub has_tags: bool,
    pub elements: u32,
    pub datas: u32,
    /// Whether an active element segment writes into an imported table: what makes
    /// instantiation slow, since those are applied eagerly, entry by entry.
    pub fills_imported_table: bool,
    pub type_section: Option<TypeSectionReader<'a>>,
    pub table_section: Option<TableSectionReader<'a>>,
    pub memory_section: Option<MemorySectionReader<'a>>,
    pub global_section: Option<GlobalSectionReader<'a>>,
    pub element_section: Option<ElementSectionReader<'a>>,
    pub code_section: Vec<wasmparser::FunctionBody<'a>>,
    pub data_section: Option<DataSectionReader<'a>>,
    /// From the `name` section, for readable backtraces.
    pub module_name: Option<&'a str>,
    pub func_names: Vec<(u32, &'a str)>,
}

impl<'a> Module<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Module<'a>, FlattenError> {
        let mut m = Module::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::TypeSection(r) => {
                    m.types = r.count();
                    m.type_section = Some(r);
                }
                Payload::ImportSection(r) => {
                    for import in r.into_imports() {
                        let import = import?;
                        m.has_tags |= matches!(import.ty, TypeRef::Tag(_));
                        if let Some(space) = Space::of_import(&import.ty) {
                            m.imports_by_space[space.slot()].push(m.imports.len());
                        }
                        m.imports.push(Import {
                            module: import.module,
                            name: import.name,
                            ty: import.ty,
                        });
                    }
                }
                Payload::FunctionSection(r) => {
                    for ty in r {
                        m.func_types.push(ty?);
                    }
                }
                Payload::TableSection(r) => {
                    m.defined_tables = r.count();
                    m.table_section = Some(r);
                }
                Payload::MemorySection(r) => {
                    m.defined_memories = r.count();
                    m.memory_section = Some(r);
                }
                Payload::GlobalSection(r) => {
                    for global in r.clone() {
                        let global = global?;
                        m.defined_globals
                            .push((!global.ty.mutable).then_some(global.init_expr));
                    }
                    m.global_section = Some(r);
                }
                Payload::ExportSection(r) => {
                    for export in r {
                        let export = export?;
                        if let Some(space) = Space::of_export(export.kind) {
                            m.exports.insert(export.name, (space, export.index));
                        }
                    }
                }
                Payload::StartSection { .. } => m.has_start = true,
                Payload::ElementSection(r) => {
                    m.elements = r.count();
                    let imported_tables = m.imported(Space::Table);
                    for element in r.clone() {
                        if let wasmparser::ElementKind::Active { table_index, .. } = element?.kind {
                            m.fills_imported_table |= table_index.unwrap_or(0) < imported_tables;
                        }
                    }
                    m.element_section = Some(r);
                }
                Payload::DataSection(r) => {
                    m.datas = r.count();
                    m.data_section = Some(r);
                }
                Payload::CodeSectionEntry(body) => m.code_section.push(body),
                Payload::TagSection(_) => m.has_tags = true,
                Payload::CustomSection(c) => {
                    if let wasmparser::KnownCustom::Name(names) = c.as_known() {
                        // A malformed name section only costs names.
                        for name in names.into_iter().flatten() {
                            match name {
                                wasmparser::Name::Module { name, .. } => m.module_name = Some(name),
                                wasmparser::Name::Function(map) => {
                                    m.func_names.extend(
                                        map.into_iter().flatten().map(|n| (n.index, n.name)),
                                    );
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }

    /// How many items of this space the module imports.
    pub fn imported(&self, space: Space) -> u32 {
        u32::try_from(self.imports_by_space[space.slot()].len()).unwrap_or(u32::MAX)
    }

    /// The `n`th import of this space.
    pub fn import_of(&self, space: Space, n: u32) -> Option<&Import<'a>> {
        let position = *self.imports_by_space[space.slot()].get(n as usize)?;
        self.imports.get(position)
    }

    pub fn defined(&self, space: Space) -> u32 {
        match space {
            Space::Func => u32::try_from(self.func_types.len()).unwrap_or(u32::MAX),
            Space::Table => self.defined_tables,
            Space::Memory => self.defined_memories,
            Space::Global => u32::try_from(self.defined_globals.len()).unwrap_or(u32::MAX),
        }
    }

    /// For a shim module (one function per slot of its table, each calling through it): the
    /// table slot the function `func` calls.
    pub fn shim_slot(&self, func: u32) -> Option<u32> {
        let body = self
            .code_section
            .get(func.checked_sub(self.imported(Space::Func))? as usize)?;
        let mut slot = None;
        for op in body.get_operators_reader().ok()? {
            match op.ok()? {
                Operator::I32Const { value } => slot = u32::try_from(value).ok(),
                Operator::CallIndirect { .. } => return slot,
                _ => {}
            }
        }
        None
    }
}

/// The value of a constant expression that is exactly `i32.const N`.
pub(super) fn i32_const(expr: &wasmparser::ConstExpr) -> Option<i32> {
    eval_i32(expr, &mut |_| None)
}

/// The value of an `i32` constant expression (`i32.const`, `global.get` of a global whose
/// value `global` knows, `i32.add`, `i32.sub`, `i32.mul`: what a dynamic linker writes, like
/// `__memory_base + 1234`), or `None` for anything else.
pub(super) fn eval_i32(
    expr: &wasmparser::ConstExpr,
    global: &mut dyn FnMut(u32) -> Option<i32>,
) -> Option<i32> {
    let mut stack: Vec<i32> = Vec::new();
    for op in expr.get_operators_reader() {
        let op = op.ok()?;
        let binary: fn(i32, i32) -> i32 = match op {
            Operator::I32Const { value } => {
                stack.push(value);
                continue;
            }
            Operator::GlobalGet { global_index } => {
                stack.push(global(global_index)?);
                continue;
            }
            Operator::End => break,
            Operator::I32Add => i32::wrapping_add,
            Operator::I32Sub => i32::wrapping_sub,
            Operator::I32Mul => i32::wrapping_mul,
            _ => return None,
        };
        let (b, a) = (stack.pop()?, stack.pop()?);
        stack.push(binary(a, b));
    }
    match stack.as_slice() {
        [value] => Some(*value),
        _ => None,
    }
}
