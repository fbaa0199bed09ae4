fn main() {
    let p = qtrace::probe::Probe::attach(qtrace::probe::HookChoice::Auto, &Default::default());
    match p { Ok(p) => { println!("tier {} refused {:?} ack {:?}", p.tier, p.refused, p.ack_detail_missing); } Err(e) => println!("err {e:#}") }
}
