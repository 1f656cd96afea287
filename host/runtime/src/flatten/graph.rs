//! The top level of a component as far as flattening needs it: its core modules, how they are
//! instantiated and what each core function, table, memory and global index refers to.

use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ExternalKind, Instance, Parser, Payload,
};

use super::FlattenError;

/// What a core instance index refers to.
#[derive(Debug)]
pub(super) enum CoreInstance<'a> {
    /// `instantiate module with (name → instance)…`.
    Instantiate {
        module: u32,
        args: Vec<(&'a str, u32)>,
    },
    /// A bag of items, each a core index of its kind.
    FromExports(Vec<(&'a str, ExternalKind, u32)>),
}

/// What a core function (or table, memory, global) index refers to.
#[derive(Debug, Clone, Copy)]
pub(super) enum CoreItem<'a> {
    /// An export of a core instance.
    Export { instance: u32, name: &'a str },
    /// Made by the component itself: a lowered import, a resource intrinsic.
    Canon,
}

/// A lifted export: its core function, realloc and post-return.
#[derive(Debug)]
pub(super) struct Lift {
    pub core_func: u32,
    pub realloc: Option<u32>,
    pub post_return: Option<u32>,
}

#[derive(Debug, Default)]
pub(super) struct Graph<'a> {
    /// Each core module's bytes, by module index.
    pub modules: Vec<&'a [u8]>,
    pub instances: Vec<CoreInstance<'a>>,
    pub funcs: Vec<CoreItem<'a>>,
    pub tables: Vec<CoreItem<'a>>,
    pub memories: Vec<CoreItem<'a>>,
    pub globals: Vec<CoreItem<'a>>,
    pub lifts: Vec<Lift>,
    /// The realloc of every lowered import that has one.
    pub lower_reallocs: Vec<u32>,
}

impl<'a> Graph<'a> {
    /// Reads the outermost component of `bytes`; nested modules and components are recorded
    /// (modules) or skipped (components), not descended into.
    pub fn read(bytes: &'a [u8]) -> Result<Graph<'a>, FlattenError> {
        let mut graph = Graph::default();
        // Payloads of nested modules and components come inline, between their section and
        // their `End`; only depth 0 is the component itself.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload?;
            match payload {
                Payload::ModuleSection {
                    unchecked_range, ..
                } => {
                    if depth == 0 {
                        // Unchecked: a truncated component claims more than it holds.
                        graph.modules.push(bytes.get(unchecked_range).ok_or(
                            FlattenError::Invalid(
                                "a module section runs past the end of the bytes".into(),
                            ),
                        )?);
                    }
                    depth += 1;
                }
                Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                _ if depth > 0 => {}
                Payload::InstanceSection(reader) => {
                    for instance in reader {
                        graph.instances.push(match instance? {
                            Instance::Instantiate { module_index, args } => {
                                CoreInstance::Instantiate {
                                    module: module_index,
                                    args: args.iter().map(|a| (a.name, a.index)).collect(),
                                }
                            }
                            Instance::FromExports(exports) => CoreInstance::FromExports(
                                exports.iter().map(|e| (e.name, e.kind, e.index)).collect(),
                            ),
                        });
                    }
                }
                Payload::ComponentAliasSection(reader) => {
                    for alias in reader {
                        if let ComponentAlias::CoreInstanceExport {
                            kind,
                            instance_index,
                            name,
                        } = alias?
                        {
                            let item = CoreItem::Export {
                                instance: instance_index,
                                name,
                            };
                            match kind {
                                ExternalKind::Func | ExternalKind::FuncExact => {
                                    graph.funcs.push(item)
                                }
                                ExternalKind::Table => graph.tables.push(item),
                                ExternalKind::Memory => graph.memories.push(item),
                                ExternalKind::Global => graph.globals.push(item),
                                // Tags are not followed: a module using one is not merged
                                // (`Module::has_tags`).
                                ExternalKind::Tag => {}
                            }
                        }
                    }
                }
                Payload::ComponentCanonicalSection(reader) => {
                    for function in reader {
                        match function? {
                            CanonicalFunction::Lift {
                                core_func_index,
                                options,
                                ..
                            } => graph.lifts.push(Lift {
                                core_func: core_func_index,
                                realloc: realloc(&options),
                                post_return: options.iter().find_map(|o| match o {
                                    CanonicalOption::PostReturn(f) => Some(*f),
                                    _ => None,
                                }),
                            }),
                            CanonicalFunction::Lower { options, .. } => {
                                graph.lower_reallocs.extend(realloc(&options));
                                graph.funcs.push(CoreItem::Canon);
                            }
                            // Every other canonical function defines a core function.
                            _ => graph.funcs.push(CoreItem::Canon),
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(graph)
    }
}

fn realloc(options: &[CanonicalOption]) -> Option<u32> {
    options.iter().find_map(|o| match o {
        CanonicalOption::Realloc(f) => Some(*f),
        _ => None,
    })
}
