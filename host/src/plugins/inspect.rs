//! What a component is: the Pitboss world it exports (if any), the WIT version, its imports and exports.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::World;

#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    /// The world and pitboss:rules version of the first Pitboss interface exported.
    #[serde(skip)]
    pub world: Option<(World, String)>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub fn shape(engine: &Engine, component: &Component) -> Shape {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let world = exports.iter().find_map(|e| world_of_export(e));
    Shape { world, imports, exports }
}

/// `pitboss:rules/segmentation@0.1.0` → (segment, "0.1.0").
fn world_of_export(name: &str) -> Option<(World, String)> {
    let rest = name.strip_prefix("pitboss:rules/")?;
    let (iface, version) = rest.split_once('@')?;
    let world = World::ALL.into_iter().find(|w| w.export_interface() == iface)?;
    Some((world, version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_world_exports() {
        assert_eq!(
            world_of_export("pitboss:rules/offer-scoring@0.1.0"),
            Some((World::OfferScorer, "0.1.0".to_string()))
        );
        assert_eq!(world_of_export("pitboss:rules/segmentation@9.0.0").unwrap().1, "9.0.0");
        assert_eq!(world_of_export("wasi:cli/run@0.2.6"), None);
        assert_eq!(world_of_export("pitboss:rules/types@0.1.0"), None);
    }
}
