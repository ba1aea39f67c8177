//! Hostile test plugin: exports a pitboss:rules version this host does not know.

wit_bindgen::generate!({
    inline: "
        package pitboss:rules@9.0.0;
        interface segmentation {
            evaluate: func(x: u32) -> u32;
        }
        world segment { export segmentation; }
    ",
});

struct Future;

impl exports::pitboss::rules::segmentation::Guest for Future {
    fn evaluate(x: u32) -> u32 {
        x
    }
}

export!(Future);
