//! Hostile test plugin: claims pitboss:rules/segmentation@0.1.0 but with other function types.

wit_bindgen::generate!({
    inline: "
        package pitboss:rules@0.1.0;
        interface segmentation {
            evaluate: func(x: u32) -> u32;
        }
        world segment { export segmentation; }
    ",
});

struct Fake;

impl exports::pitboss::rules::segmentation::Guest for Fake {
    fn evaluate(x: u32) -> u32 {
        x + 1
    }
}

export!(Fake);
