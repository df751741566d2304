//! The object store's own speed for `scripts/bench.sh s3`: reads every
//! object under a prefix from start to end with 8 MiB range GETs, one after
//! another, with the same `object_store` client tierfs uses, and prints
//! `MB/s bytes objects`.
//!
//!   s3read ENDPOINT CREDENTIALS_FILE BUCKET PREFIX
//!
//! (PREFIX's objects and those one directory below it.)

use std::time::Instant;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const RANGE: u64 = 8 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, creds, bucket, prefix] = &args[..] else {
        eprintln!("usage: s3read ENDPOINT CREDENTIALS_FILE BUCKET PREFIX");
        std::process::exit(2);
    };
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("garage");
    for line in std::fs::read_to_string(creds).expect("credentials").lines() {
        match line.split_once('=') {
            Some(("AWS_ACCESS_KEY_ID", v)) => b = b.with_access_key_id(v),
            Some(("AWS_SECRET_ACCESS_KEY", v)) => b = b.with_secret_access_key(v),
            _ => {}
        }
    }
    let store = b.build().expect("client");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The objects under PREFIX and one level of directories below it.
        let top = store
            .list_with_delimiter(Some(&Path::from(prefix.trim_end_matches('/'))))
            .await
            .expect("listing");
        let mut objects = top.objects;
        for dir in &top.common_prefixes {
            let l = store.list_with_delimiter(Some(dir)).await.expect("listing");
            objects.extend(l.objects);
        }
        let t0 = Instant::now();
        let mut bytes = 0u64;
        for o in &objects {
            let mut off = 0;
            while off < o.size {
                let end = (off + RANGE).min(o.size);
                let got = store
                    .get_range(&o.location, off..end)
                    .await
                    .expect("range GET");
                bytes += got.len() as u64;
                off = end;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        println!("{:.0} {bytes} {}", bytes as f64 / secs / 1e6, objects.len());
    });
}
