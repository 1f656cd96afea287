//! Flattening a dynamically linked component into one with a single core module, so it
//! instantiates several times faster.
//!
//! componentize-py links libc, libpython and its runtime *dynamically* (wit-component's
//! `Linker`): a component of a dozen core modules that share one memory and one function table.
//! The table is defined by one module and filled by the others' element segments at
//! `__table_base`, an imported global. Wasmtime fills a table lazily (on first use of a slot)
//! only when the module that defines it also holds the segments at constant offsets; every
//! other segment is applied at instantiation, entry by entry. For a Python plugin that is 5,769
//! function references resolved per instance, about 70% of a fresh instance's cost.
//!
//! Flattening merges every module that shares the memory into one core module (renumbering
//! its functions, tables, memories, globals, types and segments, resolving each import that
//! another merged module satisfies to that module's item, and writing each segment's offset
//! as the constant it is), then builds a new component around it with `wit-component` from the
//! original's own world. The modules wit-component generates to tie the knot (the shim that
//! lowered imports go through and its fixup) are left out: the encoder makes its own. Any shape
//! this does not recognise is left as it is ([`flatten`] answers `None` or an error, and the
//! caller compiles the original).

mod graph;
mod module;

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    CodeSection, DataCountSection, DataSection, ElementSection, EntityType, ExportKind,
    ExportSection, FunctionSection, GlobalSection, ImportSection, MemorySection, TableSection,
    TypeSection,
};
use wasmparser::{ExternalKind, Validator, WasmFeatures};

use graph::{CoreInstance, CoreItem, Graph};
use module::{Module, Space};

/// Bumped whenever the output of [`flatten`] for the same input can change, so compiled
/// artifacts of the old output are not reused.
pub const FLATTEN_VERSION: u32 = 1;

/// Why a component could not be flattened. None of these make a component unusable: the
/// caller compiles the original instead.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("cannot read the component: {0}")]
    Parse(#[from] wasmparser::BinaryReaderError),
    #[error("the component is not valid: {0}")]
    Invalid(String),
    #[error("the component uses {0}, which flattening does not handle")]
    Unsupported(&'static str),
    #[error("the component's core modules are wired in a way flattening does not follow: {0}")]
    Wiring(String),
    #[error("cannot build the flattened component: {0}")]
    Encode(String),
}

/// Flattens `component` if it is dynamically linked (see the module docs): `Ok(None)` when it
/// is not, so there is nothing to gain.
pub fn flatten(component: &[u8]) -> Result<Option<Vec<u8>>, FlattenError> {
    let graph = Graph::read(component)?;
    let Some(plan) = Plan::new(&graph)? else {
        return Ok(None);
    };
    // Encoding indexes by what the bytes say; only valid bytes get that far. (Deciding
    // whether there is anything to flatten only parses, and is cheaper than validating.)
    if let Err(e) = Validator::new_with_features(WasmFeatures::default()).validate_all(component) {
        return Err(FlattenError::Invalid(e.to_string()));
    }
    let core = plan.encode()?;
    wrap(component, core).map(Some)
}

/// How many core modules `component` itself holds (not counting nested components').
pub fn core_modules(component: &[u8]) -> Result<usize, FlattenError> {
    Ok(Graph::read(component)?.modules.len())
}

/// Which modules merge, in which order, and where each of their items lands.
struct Plan<'g, 'a> {
    graph: &'g Graph<'a>,
    /// The merged modules in instantiation order: (core instance, module).
    parts: Vec<(u32, Module<'a>)>,
    /// Instance index → position in `parts`.
    part_of_instance: HashMap<u32, usize>,
    /// The instance of the shim module and of its fixup, if the component has them.
    shim: Option<(u32, Module<'a>)>,
    fixup: Option<(u32, Module<'a>)>,
    /// Function imports no merged module satisfies: (module, name, importer part, type).
    external: Vec<(&'a str, &'a str, usize, u32)>,
    /// (module, name) → its position in `external`, which is its merged function index.
    external_index: HashMap<(&'a str, &'a str), u32>,
    /// Globals already evaluated by [`Plan::global_value`]: an initialiser may read several
    /// others, so without this a chain of them could take exponential time.
    global_values: RefCell<HashMap<(usize, u32), Option<i32>>>,
}

/// Where an imported item comes from once merged.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Defined by a merged module: (part, index in that module's space).
    Part(usize, u32),
    /// Made by the component (a lowered import): stays an import, under the importer's name.
    Outside,
}

impl<'g, 'a> Plan<'g, 'a> {
    fn new(graph: &'g Graph<'a>) -> Result<Option<Plan<'g, 'a>>, FlattenError> {
        let mut parts = Vec::new();
        let mut shim = None;
        let mut fixup = None;
        let mut seen_modules = HashMap::new();
        let mut instantiated_twice = false;
        for (index, instance) in graph.instances.iter().enumerate() {
            let CoreInstance::Instantiate { module, .. } = instance else {
                continue;
            };
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let bytes = graph
                .modules
                .get(*module as usize)
                .ok_or_else(|| FlattenError::Wiring(format!("no module {module}")))?;
            instantiated_twice |= seen_modules.insert(*module, index).is_some();
            let m = Module::read(bytes)?;
            if m.exports.get("$imports") == Some(&(Space::Table, 0)) {
                shim = Some((index, m));
            } else if m
                .imports
                .iter()
                .any(|i| i.name == "$imports" && Space::of_import(&i.ty) == Some(Space::Table))
            {
                fixup = Some((index, m));
            } else {
                parts.push((index, m));
            }
        }
        if parts.len() < 2 || !parts.iter().any(|(_, m)| m.fills_imported_table) {
            return Ok(None);
        }
        // Only now that there is something to gain is anything this does not handle an error
        // (worth a line in the log) rather than simply nothing to do.
        if instantiated_twice {
            return Err(FlattenError::Unsupported("a module instantiated twice"));
        }
        if parts.iter().any(|(_, m)| m.has_start) {
            return Err(FlattenError::Unsupported("a start function"));
        }
        if parts.iter().any(|(_, m)| m.has_tags) {
            return Err(FlattenError::Unsupported("core tags"));
        }
        let part_of_instance = parts
            .iter()
            .enumerate()
            .map(|(p, (i, _))| (*i, p))
            .collect();
        let mut plan = Plan {
            graph,
            parts,
            part_of_instance,
            shim,
            fixup,
            external: Vec::new(),
            external_index: HashMap::new(),
            global_values: RefCell::default(),
        };
        // Every function import that stays one, in first-seen order.
        for p in 0..plan.parts.len() {
            let n = plan.parts[p].1.imported(Space::Func);
            for i in 0..n {
                if let Source::Outside = plan.resolve_import(p, Space::Func, i, 0)? {
                    let m = &plan.parts[p].1;
                    let import = m.import_of(Space::Func, i).expect("counted above");
                    let ty = match import.ty {
                        wasmparser::TypeRef::Func(t) | wasmparser::TypeRef::FuncExact(t) => t,
                        _ => unreachable!("a function import"),
                    };
                    let next = u32::try_from(plan.external.len()).unwrap_or(u32::MAX);
                    let key = (import.module, import.name);
                    if let Entry::Vacant(entry) = plan.external_index.entry(key) {
                        entry.insert(next);
                        plan.external.push((import.module, import.name, p, ty));
                    }
                }
            }
        }
        Ok(Some(plan))
    }

    /// Where import `n` of `space` of part `p` comes from.
    fn resolve_import(
        &self,
        p: usize,
        space: Space,
        n: u32,
        depth: u32,
    ) -> Result<Source, FlattenError> {
        let (instance, m) = &self.parts[p];
        let import = m
            .import_of(space, n)
            .ok_or_else(|| FlattenError::Wiring(format!("no import {n}")))?;
        let arg = self.arg(*instance, import.module)?;
        self.resolve_export(arg, import.name, space, depth + 1)
    }

    /// The instance passed to `instance` under `name`.
    fn arg(&self, instance: u32, name: &str) -> Result<u32, FlattenError> {
        match self.graph.instances.get(instance as usize) {
            Some(CoreInstance::Instantiate { args, .. }) => args
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, i)| *i)
                .ok_or_else(|| {
                    FlattenError::Wiring(format!("instance {instance} gets no {name:?}"))
                }),
            _ => Err(FlattenError::Wiring(format!(
                "instance {instance} is not instantiated"
            ))),
        }
    }

    /// Where the item `name` of `space` exported by core instance `instance` comes from.
    fn resolve_export(
        &self,
        instance: u32,
        name: &str,
        space: Space,
        depth: u32,
    ) -> Result<Source, FlattenError> {
        // Chains are a few links long; a cycle means wiring this code does not understand.
        if depth > 64 {
            return Err(FlattenError::Wiring(
                "an import chain that does not end".into(),
            ));
        }
        if let Some(&p) = self.part_of_instance.get(&instance) {
            let m = &self.parts[p].1;
            let &(s, index) = m.exports.get(name).ok_or_else(|| {
                FlattenError::Wiring(format!("instance {instance} exports no {name:?}"))
            })?;
            if s != space {
                return Err(FlattenError::Wiring(format!("{name:?} is of another kind")));
            }
            let imported = m.imported(space);
            return if index < imported {
                self.resolve_import(p, space, index, depth)
            } else {
                Ok(Source::Part(p, index))
            };
        }
        if let Some((shim_instance, shim)) = &self.shim
            && *shim_instance == instance
        {
            return self.through_shim(shim, name, depth);
        }
        match self.graph.instances.get(instance as usize) {
            Some(CoreInstance::FromExports(items)) => {
                let &(_, kind, index) = items
                    .iter()
                    .find(|(n, kind, _)| *n == name && Space::of_export(*kind) == Some(space))
                    .ok_or_else(|| {
                        FlattenError::Wiring(format!("instance {instance} holds no {name:?}"))
                    })?;
                let item = self.item(kind, index)?;
                match item {
                    CoreItem::Export { instance, name } => {
                        self.resolve_export(instance, name, space, depth + 1)
                    }
                    CoreItem::Canon => Ok(Source::Outside),
                }
            }
            _ => Err(FlattenError::Wiring(format!(
                "instance {instance} is a module this does not merge"
            ))),
        }
    }

    /// A shim function calls through slot N of the shim's table, which the fixup module fills
    /// with the function it imports for that slot.
    fn through_shim(
        &self,
        shim: &Module<'a>,
        name: &str,
        depth: u32,
    ) -> Result<Source, FlattenError> {
        let wiring = |what: &str| FlattenError::Wiring(format!("shim function {name:?}: {what}"));
        let &(_, func) = shim
            .exports
            .get(name)
            .ok_or_else(|| wiring("not exported"))?;
        let slot = shim
            .shim_slot(func)
            .ok_or_else(|| wiring("no call through the table"))?;
        let (fixup_instance, fixup) = self.fixup.as_ref().ok_or_else(|| wiring("no fixup"))?;
        let elements = fixup
            .element_section
            .clone()
            .ok_or_else(|| wiring("no fixup segment"))?;
        for element in elements {
            let element = element?;
            let wasmparser::ElementKind::Active { offset_expr, .. } = element.kind else {
                continue;
            };
            let offset = module::i32_const(&offset_expr)
                .and_then(|o| u32::try_from(o).ok())
                .ok_or_else(|| wiring("a fixup segment at a computed offset"))?;
            let wasmparser::ElementItems::Functions(funcs) = element.items else {
                continue;
            };
            for (i, f) in funcs.into_iter().enumerate() {
                let f = f?;
                if offset.checked_add(u32::try_from(i).unwrap_or(u32::MAX)) != Some(slot) {
                    continue;
                }
                let import = fixup
                    .import_of(Space::Func, f)
                    .ok_or_else(|| wiring("the fixup fills the slot with its own function"))?;
                let arg = self.arg(*fixup_instance, import.module)?;
                return self.resolve_export(arg, import.name, Space::Func, depth + 1);
            }
        }
        Err(wiring("its slot is never filled"))
    }

    fn item(&self, kind: ExternalKind, index: u32) -> Result<CoreItem<'a>, FlattenError> {
        let space = match Space::of_export(kind) {
            Some(Space::Func) => &self.graph.funcs,
            Some(Space::Table) => &self.graph.tables,
            Some(Space::Memory) => &self.graph.memories,
            Some(Space::Global) => &self.graph.globals,
            None => return Err(FlattenError::Unsupported("core tags")),
        };
        space
            .get(index as usize)
            .copied()
            .ok_or_else(|| FlattenError::Wiring(format!("no core item {index}")))
    }

    /// The value of global `index` of part `p` if it is a constant: immutable, and computed
    /// from constants only.
    fn global_value(&self, p: usize, index: u32, depth: u32) -> Option<i32> {
        if depth > 64 {
            return None;
        }
        if let Some(known) = self.global_values.borrow().get(&(p, index)) {
            return *known;
        }
        let value = self.evaluate_global(p, index, depth);
        self.global_values.borrow_mut().insert((p, index), value);
        value
    }

    fn evaluate_global(&self, p: usize, index: u32, depth: u32) -> Option<i32> {
        let m = &self.parts[p].1;
        let imported = m.imported(Space::Global);
        if index < imported {
            match self.resolve_import(p, Space::Global, index, 0).ok()? {
                Source::Part(q, i) => self.global_value(q, i, depth + 1),
                Source::Outside => None,
            }
        } else {
            let init = m
                .defined_globals
                .get((index - imported) as usize)?
                .as_ref()?;
            module::eval_i32(init, &mut |g| self.global_value(p, g, depth + 1))
        }
    }

    /// Where a core function of the component lands in the merged module, if it is one of
    /// the merged modules' own.
    fn merged_func(&self, func: u32, layout: &Layout) -> Result<Option<u32>, FlattenError> {
        match self.item(ExternalKind::Func, func)? {
            CoreItem::Export { instance, name } => {
                match self.resolve_export(instance, name, Space::Func, 0)? {
                    Source::Part(p, index) => Ok(Some(layout.map(self, Space::Func, p, index))),
                    Source::Outside => Ok(None),
                }
            }
            CoreItem::Canon => Ok(None),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, FlattenError> {
        let layout = Layout::new(self);
        let mut maps = Vec::with_capacity(self.parts.len());
        for p in 0..self.parts.len() {
            maps.push(Remap::new(self, &layout, p)?);
        }

        let mut types = TypeSection::new();
        for ((_, m), map) in self.parts.iter().zip(&mut maps) {
            if let Some(section) = m.type_section.clone() {
                map.parse_type_section(&mut types, section)
                    .map_err(encode_error)?;
            }
        }
        let mut imports = ImportSection::new();
        for &(module, name, p, ty) in &self.external {
            imports.import(module, name, EntityType::Function(layout.types[p] + ty));
        }
        let mut functions = FunctionSection::new();
        let mut tables = TableSection::new();
        let mut memories = MemorySection::new();
        let mut globals = GlobalSection::new();
        let mut elements = ElementSection::new();
        let mut code = CodeSection::new();
        let mut data = DataSection::new();
        for ((_, m), map) in self.parts.iter().zip(&mut maps) {
            for ty in &m.func_types {
                functions.function(map.type_index(*ty).map_err(encode_error)?);
            }
            if let Some(s) = m.table_section.clone() {
                map.parse_table_section(&mut tables, s)
                    .map_err(encode_error)?;
            }
            if let Some(s) = m.memory_section.clone() {
                map.parse_memory_section(&mut memories, s)
                    .map_err(encode_error)?;
            }
            if let Some(s) = m.global_section.clone() {
                map.parse_global_section(&mut globals, s)
                    .map_err(encode_error)?;
            }
            if let Some(s) = m.element_section.clone() {
                map.parse_element_section(&mut elements, s)
                    .map_err(encode_error)?;
            }
            for body in &m.code_section {
                map.parse_function_body(&mut code, body.clone())
                    .map_err(encode_error)?;
            }
            if let Some(s) = m.data_section.clone() {
                map.parse_data_section(&mut data, s).map_err(encode_error)?;
            }
        }
        if memories.len() != 1 {
            return Err(FlattenError::Unsupported("more than one memory"));
        }

        let exports = self.exports(&layout)?;
        let mut module = wasm_encoder::Module::new();
        module.section(&types);
        module.section(&imports);
        module.section(&functions);
        module.section(&tables);
        module.section(&memories);
        module.section(&globals);
        module.section(&exports);
        module.section(&elements);
        if !data.is_empty() {
            module.section(&DataCountSection { count: data.len() });
        }
        module.section(&code);
        module.section(&data);
        module.section(&self.names(&layout));
        Ok(module.finish())
    }

    /// The merged modules' function names, each prefixed with its module's name (`libc.so!abort`),
    /// so a trap's backtrace still says where it happened.
    fn names(&self, layout: &Layout) -> wasm_encoder::NameSection {
        let mut names = Vec::new();
        for (p, (_, m)) in self.parts.iter().enumerate() {
            let imported = m.imported(Space::Func);
            for &(index, name) in &m.func_names {
                if index >= imported && index - imported < m.defined(Space::Func) {
                    let merged = layout.map(self, Space::Func, p, index);
                    names.push((
                        merged,
                        match m.module_name {
                            Some(module) => format!("{module}!{name}"),
                            None => name.to_owned(),
                        },
                    ));
                }
            }
        }
        names.sort_by_key(|(index, _)| *index);
        names.dedup_by_key(|(index, _)| *index);
        let mut map = wasm_encoder::NameMap::new();
        for (index, name) in &names {
            map.append(*index, name);
        }
        let mut section = wasm_encoder::NameSection::new();
        section.functions(&map);
        section
    }

    /// What the component lifts (under the names its merged module exported them), the
    /// memory and the one `cabi_realloc`.
    fn exports(&self, layout: &Layout) -> Result<ExportSection, FlattenError> {
        let mut exports = ExportSection::new();
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut add = |name: &str, index: u32| -> Result<(), FlattenError> {
            match names.insert(name.to_owned(), index) {
                Some(other) if other != index => Err(FlattenError::Wiring(format!(
                    "two different functions are exported as {name:?}"
                ))),
                _ => Ok(()),
            }
        };
        // The realloc most lifts and lowers use. componentize-py passes libc's, its runtime's
        // and its bindings' `cabi_realloc` to different functions; all three allocate with
        // the one libc `malloc`, so one serves them all.
        let mut reallocs: Vec<(u32, usize)> = Vec::new();
        let used = self
            .graph
            .lifts
            .iter()
            .filter_map(|l| l.realloc)
            .chain(self.graph.lower_reallocs.iter().copied());
        for func in used {
            if let Some(index) = self.merged_func(func, layout)? {
                match reallocs.iter_mut().find(|(i, _)| *i == index) {
                    Some((_, n)) => *n += 1,
                    None => reallocs.push((index, 1)),
                }
            }
        }
        if let Some(&(realloc, _)) = reallocs.iter().max_by_key(|(_, n)| *n) {
            add("cabi_realloc", realloc)?;
        }
        for lift in &self.graph.lifts {
            for func in std::iter::once(lift.core_func).chain(lift.post_return) {
                let CoreItem::Export { name, .. } = self.item(ExternalKind::Func, func)? else {
                    return Err(FlattenError::Wiring(
                        "a lift of a canonical function".into(),
                    ));
                };
                let index = self.merged_func(func, layout)?.ok_or_else(|| {
                    FlattenError::Wiring(format!("lifted {name:?} is not a merged function"))
                })?;
                add(name, index)?;
            }
        }
        let mut names: Vec<(String, u32)> = names.into_iter().collect();
        names.sort();
        for (name, index) in names {
            exports.export(&name, ExportKind::Func, index);
        }
        exports.export("memory", ExportKind::Memory, 0);
        Ok(exports)
    }
}

/// Where each part's defined items start in the merged module.
struct Layout {
    types: Vec<u32>,
    funcs: Vec<u32>,
    tables: Vec<u32>,
    memories: Vec<u32>,
    globals: Vec<u32>,
    elements: Vec<u32>,
    datas: Vec<u32>,
}

impl Layout {
    fn new(plan: &Plan) -> Layout {
        let starts = |first: u32, count: &dyn Fn(&Module) -> u32| {
            let mut next = first;
            plan.parts
                .iter()
                .map(|(_, m)| {
                    let start = next;
                    next = next.saturating_add(count(m));
                    start
                })
                .collect::<Vec<u32>>()
        };
        let external = u32::try_from(plan.external.len()).unwrap_or(u32::MAX);
        Layout {
            types: starts(0, &|m| m.types),
            funcs: starts(external, &|m| m.defined(Space::Func)),
            tables: starts(0, &|m| m.defined(Space::Table)),
            memories: starts(0, &|m| m.defined(Space::Memory)),
            globals: starts(0, &|m| m.defined(Space::Global)),
            elements: starts(0, &|m| m.elements),
            datas: starts(0, &|m| m.datas),
        }
    }

    /// The merged index of item `index` (in its module's space, past its imports) of part `p`.
    fn map(&self, plan: &Plan, space: Space, p: usize, index: u32) -> u32 {
        let start = match space {
            Space::Func => self.funcs[p],
            Space::Table => self.tables[p],
            Space::Memory => self.memories[p],
            Space::Global => self.globals[p],
        };
        start + (index - plan.parts[p].1.imported(space))
    }
}

/// One part's index maps, used to re-encode its sections into the merged module.
struct Remap {
    types: u32,
    elements: u32,
    datas: u32,
    funcs: Vec<u32>,
    tables: Vec<u32>,
    memories: Vec<u32>,
    globals: Vec<u32>,
    /// Globals (by this module's index) known to hold a constant, so a segment offset read
    /// from one can be written as the constant.
    consts: HashMap<u32, i32>,
}

impl Remap {
    fn new(plan: &Plan, layout: &Layout, p: usize) -> Result<Remap, FlattenError> {
        let m = &plan.parts[p].1;
        let mut remap = Remap {
            types: layout.types[p],
            elements: layout.elements[p],
            datas: layout.datas[p],
            funcs: Vec::new(),
            tables: Vec::new(),
            memories: Vec::new(),
            globals: Vec::new(),
            consts: HashMap::new(),
        };
        for space in [Space::Func, Space::Table, Space::Memory, Space::Global] {
            let imported = m.imported(space);
            let mut map = Vec::new();
            for n in 0..imported {
                map.push(match plan.resolve_import(p, space, n, 0)? {
                    Source::Part(q, index) => layout.map(plan, space, q, index),
                    Source::Outside if space == Space::Func => {
                        let import = m.import_of(space, n).expect("counted above");
                        *plan
                            .external_index
                            .get(&(import.module, import.name))
                            .ok_or_else(|| {
                                FlattenError::Wiring(format!(
                                    "import {:?} {:?} resolved differently twice",
                                    import.module, import.name
                                ))
                            })?
                    }
                    Source::Outside => {
                        return Err(FlattenError::Unsupported(
                            "a table, memory or global from outside the merged modules",
                        ));
                    }
                });
            }
            for index in imported..imported + m.defined(space) {
                map.push(layout.map(plan, space, p, index));
            }
            match space {
                Space::Func => remap.funcs = map,
                Space::Table => remap.tables = map,
                Space::Memory => remap.memories = map,
                Space::Global => remap.globals = map,
            }
        }
        for index in 0..m.imported(Space::Global) + m.defined(Space::Global) {
            if let Some(value) = plan.global_value(p, index, 0) {
                remap.consts.insert(index, value);
            }
        }
        Ok(remap)
    }
}

/// An index the module does not have: only malformed bytes get one past validation.
#[derive(Debug)]
struct OutOfRange;

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an index out of range")
    }
}

fn lookup(map: &[u32], index: u32) -> Result<u32, reencode::Error<OutOfRange>> {
    map.get(index as usize)
        .copied()
        .ok_or(reencode::Error::UserError(OutOfRange))
}

impl Reencode for Remap {
    type Error = OutOfRange;

    fn type_index(&mut self, ty: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        Ok(self.types + ty)
    }
    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        lookup(&self.funcs, func)
    }
    fn table_index(&mut self, table: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        lookup(&self.tables, table)
    }
    fn memory_index(&mut self, memory: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        lookup(&self.memories, memory)
    }
    fn global_index(&mut self, global: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        lookup(&self.globals, global)
    }
    fn element_index(&mut self, element: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        Ok(self.elements + element)
    }
    fn data_index(&mut self, data: u32) -> Result<u32, reencode::Error<OutOfRange>> {
        Ok(self.datas + data)
    }

    /// An `i32` expression of globals that hold constants becomes its value: segment offsets
    /// and globals like `__memory_base + N`, where a constant expression may only read an
    /// imported global, and once merged nothing is imported.
    fn const_expr(
        &mut self,
        expr: wasmparser::ConstExpr,
    ) -> Result<wasm_encoder::ConstExpr, reencode::Error<OutOfRange>> {
        match module::eval_i32(&expr, &mut |g| self.consts.get(&g).copied()) {
            Some(value) => Ok(wasm_encoder::ConstExpr::i32_const(value)),
            None => reencode::utils::const_expr(self, expr),
        }
    }
}

fn encode_error(e: reencode::Error<OutOfRange>) -> FlattenError {
    match e {
        reencode::Error::UserError(OutOfRange) => {
            FlattenError::Wiring("an index out of range".into())
        }
        other => FlattenError::Encode(other.to_string()),
    }
}

/// Builds a component around the merged module `core` with the original component's world.
fn wrap(component: &[u8], mut core: Vec<u8>) -> Result<Vec<u8>, FlattenError> {
    let (resolve, world) = match wit_component::decode(component).map_err(encode)? {
        wit_component::DecodedWasm::Component(resolve, world) => (resolve, world),
        wit_component::DecodedWasm::WitPackage(..) => {
            return Err(FlattenError::Unsupported(
                "a WIT package instead of a component",
            ));
        }
    };
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(encode)?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&core)
        .map_err(encode)?
        .encode()
        .map_err(encode)
}

fn encode(e: impl std::fmt::Display) -> FlattenError {
    FlattenError::Encode(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(bytes: &[u8]) -> wasmparser::ConstExpr<'_> {
        wasmparser::ConstExpr::new(wasmparser::BinaryReader::new(bytes, 0))
    }

    #[test]
    fn evaluates_what_a_dynamic_linker_writes() {
        // global.get 0; i32.const 1234; i32.add; end
        let base_plus = expr(&[0x23, 0x00, 0x41, 0xd2, 0x09, 0x6a, 0x0b]);
        assert_eq!(
            module::eval_i32(&base_plus, &mut |g| (g == 0).then_some(1_000_000)),
            Some(1_001_234)
        );
        // A global whose value is unknown (mutable, or from outside) is no constant.
        assert_eq!(module::eval_i32(&base_plus, &mut |_| None), None);
        // i32.const 7; end
        assert_eq!(module::i32_const(&expr(&[0x41, 0x07, 0x0b])), Some(7));
        // i64.const 7; end: not an i32 expression.
        assert_eq!(
            module::eval_i32(&expr(&[0x42, 0x07, 0x0b]), &mut |_| None),
            None
        );
        // i32.add with one operand: malformed, not a panic.
        assert_eq!(
            module::eval_i32(&expr(&[0x41, 0x07, 0x6a, 0x0b]), &mut |_| None),
            None
        );
    }

    #[test]
    fn a_statically_linked_component_is_left_as_it_is() {
        let echo = crate::testutil::plugin_wasm("echo");
        assert_eq!(flatten(&echo).expect("echo reads"), None);
        assert!(core_modules(&echo).expect("echo reads") >= 1);
    }

    #[test]
    fn bytes_that_are_no_component_are_an_error_not_a_panic() {
        assert!(flatten(b"\0asm\x0d\x00\x01\x00garbage").is_err());
        assert!(flatten(b"not wasm at all").is_err());
        let echo = crate::testutil::plugin_wasm("echo");
        for cut in [8, echo.len() / 3, echo.len() - 1] {
            let _ = flatten(&echo[..cut]);
        }
    }
}
