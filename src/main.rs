fn main() {
    std::process::exit(vendgate::cli::main());
}
