fn main() {
    println!("I am not a rule plugin");
}
