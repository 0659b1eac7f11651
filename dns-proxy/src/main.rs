fn main() {
    println!("not yet implemented");
}
