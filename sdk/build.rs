//! Writes the macros that generate a plugin's export bindings *in the plugin's crate*, pointing at this
//! repository's `wit/`. Generating them there (not here) matters: the component-type section that names
//! the plugin's world must come from the plugin alone, or every plugin would claim all three worlds.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let wit = manifest.join("../wit").canonicalize().expect("the wit/ folder beside sdk/");
    println!("cargo:rerun-if-changed={}", wit.display());
    let wit = wit.display().to_string().replace('\\', "/");
    let mut out = String::new();
    for (world, macro_name) in [
        ("segment", "__generate_segment"),
        ("bonus-rule", "__generate_bonus_rule"),
        ("offer-scorer", "__generate_offer_scorer"),
    ] {
        out.push_str(&format!(
            r#"
#[doc(hidden)]
#[macro_export]
macro_rules! {macro_name} {{
    () => {{
        ::pitboss_sdk::__wit_bindgen::generate!({{
            path: "{wit}",
            world: "pitboss:rules/{world}@0.1.0",
            runtime_path: "::pitboss_sdk::__wit_bindgen::rt",
            with: {{
                "pitboss:rules/types@0.1.0": ::pitboss_sdk::types,
                "pitboss:rules/log@0.1.0": ::pitboss_sdk::host::log,
                "pitboss:rules/clock@0.1.0": ::pitboss_sdk::host::clock,
                "pitboss:rules/config@0.1.0": ::pitboss_sdk::host::config,
            }},
        }});
    }};
}}
"#
        ));
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("generate.rs"), out).unwrap();
}
