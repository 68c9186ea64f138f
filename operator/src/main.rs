fn main() {
    println!("rstore-operator: not yet implemented");
}
