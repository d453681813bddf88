//! Embeds the chat page (`page/` at the repository root) into the crate, ready to serve:
//!
//! - every file but `index.html` is served as `/assets/<name>.<content hash>.<ext>`, so
//!   it can be cached for good (a change is a new name); `index.html` is rewritten to name
//!   them so, and is served at `/` and revalidated;
//! - each file is gzipped once, here, at its best level, rather than at every cold start.
//!
//! Writes `$OUT_DIR/page.rs`: one `PageFile` per served file (see `src/api/page.rs`).
//!
//! Also converts the API's contract (`openapi.yaml`) to the JSON `GET /api/openapi.json`
//! serves, `$OUT_DIR/openapi.json`: the functions carry no YAML parser, and a contract that
//! isn't valid YAML fails the build rather than a request.

use std::{
    env,
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};
use sha2::{Digest, Sha256};

/// What is served, by extension; other files (READMEs, licences) are documentation.
const TYPES: &[(&str, &str)] = &[
    ("js", "text/javascript; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("svg", "image/svg+xml"),
];

fn main() {
    let repo = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let root = repo.join("page");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    openapi(&repo.join("openapi.yaml"), &out.join("openapi.json"));
    println!("cargo::rerun-if-changed={}", root.display());

    let mut sources = Vec::new();
    collect(&root, &mut sources);
    sources.sort();

    let mut html = fs::read_to_string(root.join("index.html")).expect("page/index.html");
    let mut code = String::new();
    for source in &sources {
        let rel = source.strip_prefix(&root).unwrap().to_str().unwrap();
        let ext = source.extension().and_then(|e| e.to_str()).unwrap_or("");
        let Some((_, content_type)) = TYPES.iter().find(|(e, _)| *e == ext) else {
            continue;
        };
        let bytes = fs::read(source).unwrap();
        let hash = hex(&bytes);
        let stem = source.file_stem().unwrap().to_str().unwrap();
        let served = format!("{stem}.{}.{ext}", &hash[..12]);
        let quoted = format!("\"{rel}\"");
        assert!(
            html.contains(&quoted),
            "page/index.html does not use {rel}; remove the file or link it"
        );
        html = html.replace(&quoted, &format!("\"assets/{served}\""));
        entry(
            &mut code,
            &out,
            &format!("/assets/{served}"),
            content_type,
            &bytes,
            true,
        );
    }
    entry(
        &mut code,
        &out,
        "/",
        "text/html; charset=utf-8",
        html.as_bytes(),
        false,
    );
    fs::write(
        out.join("page.rs"),
        format!("pub(crate) static FILES: &[PageFile] = &[\n{code}];\n"),
    )
    .unwrap();
}

/// Every file under `dir`.
fn collect(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, into);
        } else {
            into.push(path);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// One `PageFile`: the bytes as they are and gzipped, written beside page.rs.
fn entry(
    code: &mut String,
    out: &Path,
    path: &str,
    content_type: &str,
    bytes: &[u8],
    immutable: bool,
) {
    let hash = hex(bytes);
    let name = &hash[..16];
    let plain = out.join(format!("page-{name}"));
    fs::write(&plain, bytes).unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(bytes).unwrap();
    let gzipped = gz.finish().unwrap();
    let gzip = out.join(format!("page-{name}.gz"));
    fs::write(&gzip, &gzipped).unwrap();
    let _ = writeln!(
        code,
        "    PageFile {{ path: {path:?}, content_type: {content_type:?}, etag: \"\\\"{name}\\\"\", \
         gzip_etag: \"\\\"{name}-gz\\\"\", plain: include_bytes!({plain:?}), \
         gzip: include_bytes!({gzip:?}), immutable: {immutable} }},"
    );
}

/// The contract as JSON, fields in the order the YAML gives them.
fn openapi(yaml: &Path, json: &Path) {
    println!("cargo::rerun-if-changed={}", yaml.display());
    let text = fs::read_to_string(yaml).expect("openapi.yaml");
    let doc: serde_json::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("openapi.yaml does not convert to JSON: {e}"));
    fs::write(json, serde_json::to_string(&doc).unwrap()).unwrap();
}
