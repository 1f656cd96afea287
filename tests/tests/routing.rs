//! Topics and routes through the real binary, as a user drives them with `spool route` /
//! `spool publish` and `curl`: fan-out counts, filter outcomes and failures (nothing lost, replay),
//! chained publishes committed only with their handler's ack (also across `kill -9`), the chain
//! depth limit, traces, unroutable publishes, routes from spool.toml, and roles.
//!
//! The examples of docs/ROUTING.md are the ones exercised here.

use std::time::Duration;

use sha2::{Digest, Sha256};
use spool_tests::{Method, TestHost, Value, json, plugin_path, run_cli, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A queue with no handler: what is delivered to it waits there to be counted.
async fn holding_queue(host: &TestHost, name: &str) {
    host.put_queue(name, json!({})).await;
}

/// A queue handled by `misbehave`, failing fast.
async fn misbehave_queue(host: &TestHost, name: &str, max_attempts: u32) {
    host.put_queue(
        name,
        json!({
            "handler": "misbehave",
            "max_attempts": max_attempts,
            "backoff_base_ms": 10,
            "backoff_max_ms": 50,
        }),
    )
    .await;
}

async fn enqueued(host: &TestHost, queue: &str) -> u64 {
    host.stats(queue).await.enqueued
}

/// `POST /v1/topics/{topic}/messages` with a payload, expecting 202; the deliveries.
async fn publish(host: &TestHost, topic: &str, body: Value) -> Vec<Value> {
    let resp = host
        .post(&format!("/v1/topics/{topic}/messages"), &body)
        .await
        .expect(202, &format!("publish to {topic}"));
    resp["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("publish answer has `deliveries`: {resp}"))
        .clone()
}

fn queues_of(deliveries: &[Value]) -> Vec<String> {
    let mut q: Vec<String> = deliveries
        .iter()
        .map(|d| d["queue"].as_str().unwrap_or_default().to_owned())
        .collect();
    q.sort();
    q
}

/// The id the CLI printed for `route add`: "route 3: ...".
fn route_id(stdout: &str) -> String {
    stdout
        .trim()
        .strip_prefix("route ")
        .and_then(|s| s.split(':').next())
        .unwrap_or_else(|| panic!("`route add` prints `route ID: ...`, got {stdout:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_each_matching_queue_once() {
    let host = TestHost::start();
    for q in ["orders", "audit", "everything", "gold"] {
        holding_queue(&host, q).await;
    }
    let add = |args: &[&str]| {
        let mut all = vec!["route", "add"];
        all.extend_from_slice(args);
        let out = host.cli(&all);
        out.expect_success(&format!("spool {}", all.join(" ")));
        route_id(&out.stdout)
    };
    add(&["orders.*", "orders"]);
    add(&["orders.#", "audit"]);
    // A second route to audit: a message both match still reaches audit once.
    add(&["orders.*", "audit"]);
    add(&["#", "everything"]);
    let gold = add(&["orders.#", "gold", "--header", "tier=gold"]);

    // orders.created: orders.*, orders.# (twice for audit) and #.
    let out = host.cli(["publish", "orders.created", r#"{"n": 1}"#]);
    out.expect_success("spool publish orders.created");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("QUEUE"), "{}", out.stdout);
    assert_eq!(lines.len(), 4, "three deliveries: {}", out.stdout);
    for q in ["orders", "audit", "everything"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{q} "))),
            "{q} in {}",
            out.stdout
        );
    }
    // orders.eu.created: `*` is one word, so not orders.*; `#` is any number.
    let d = publish(&host, "orders.eu.created", json!({"payload": {"n": 2}})).await;
    assert_eq!(queues_of(&d), ["audit", "everything"]);
    // `orders.#` also matches `orders` itself (zero words).
    let d = publish(&host, "orders", json!({"payload": {"n": 3}})).await;
    assert_eq!(queues_of(&d), ["audit", "everything"]);
    // The header condition must hold exactly.
    let d = publish(
        &host,
        "orders.created",
        json!({"payload": {"n": 4}, "headers": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(queues_of(&d), ["audit", "everything", "gold", "orders"]);
    let d = publish(
        &host,
        "orders.created",
        json!({"payload": {"n": 5}, "headers": {"tier": "GOLD"}}),
    )
    .await;
    assert_eq!(queues_of(&d), ["audit", "everything", "orders"]);

    assert_eq!(enqueued(&host, "orders").await, 3);
    assert_eq!(enqueued(&host, "audit").await, 5);
    assert_eq!(enqueued(&host, "everything").await, 5);
    assert_eq!(enqueued(&host, "gold").await, 1);

    // A file of messages, batched like `enqueue --file`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.jsonl");
    let lines: String = (0..5)
        .map(|i| format!("{{\"payload\": {{\"i\": {i}}}, \"idempotency_key\": \"k-{i}\"}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let out = host.cli([
        "publish",
        "orders.paid",
        "--file",
        file.to_str().unwrap(),
        "--batch",
        "2",
    ]);
    out.expect_success("spool publish --file");
    assert!(
        out.stdout.contains("published 5 messages to orders.paid")
            && out.stdout.contains("(3 requests)")
            && out
                .stdout
                .contains("15 deliveries: audit (5), everything (5), orders (5)"),
        "{}",
        out.stdout
    );
    assert_eq!(enqueued(&host, "orders").await, 8);

    // The listing counts deliveries per route; deleting a route stops its deliveries.
    let list = host.get("/v1/routes").await.expect(200, "list routes");
    let routes = list["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 5, "{list}");
    let gold_route = routes
        .iter()
        .find(|r| r["queue"] == "gold")
        .expect("the gold route");
    assert_eq!(gold_route["delivered"], 1, "{gold_route}");
    assert_eq!(gold_route["headers"], json!({"tier": "gold"}));
    let table = host.cli(["route", "list"]);
    table.expect_success("spool route list");
    assert!(table.stdout.contains("tier=gold"), "{}", table.stdout);
    let show = host.cli(["route", "show", &gold]);
    show.expect_success("spool route show");
    assert!(show.stdout.contains("orders.#"), "{}", show.stdout);
    host.cli(["route", "delete", &gold])
        .expect_success("spool route delete");
    host.get(&format!("/v1/routes/{gold}"))
        .await
        .expect_error(404, "a deleted route");
    let d = publish(
        &host,
        "orders.created",
        json!({"payload": {"n": 6}, "headers": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(queues_of(&d), ["audit", "everything", "orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_by_field_redirects_drops_and_delivers() {
    let wasm = plugin_path("route_by_field");
    let host = TestHost::options()
        .config(format!(
            "[plugins.route-by-field]\npath = {:?}\n\n[plugins.route-by-field.config]\nprefix = \"orders-\"\n",
            wasm.display().to_string()
        ))
        .start();
    holding_queue(&host, "orders").await;
    holding_queue(&host, "orders-eu").await;
    host.cli([
        "route",
        "add",
        "orders.#",
        "orders",
        "--filter",
        "route-by-field",
    ])
    .expect_success("route with a filter");

    // Redirect + transform: to orders-eu, with the filter's headers added to the publisher's.
    let d = publish(
        &host,
        "orders.created",
        json!({"payload": {"id": 7, "region": "eu"}, "headers": {"source": "web"}}),
    )
    .await;
    assert_eq!(queues_of(&d), ["orders-eu"]);
    let m = host.get_message(d[0]["id"].as_str().unwrap()).await;
    assert_eq!(m["payload"], json!({"id": 7, "region": "eu"}));
    assert_eq!(m["headers"]["routed-by"], "route-by-field", "{m}");
    assert_eq!(m["headers"]["route-field"], "eu", "{m}");
    assert_eq!(m["headers"]["source"], "web", "{m}");
    assert_eq!(m["topic"], "orders.created");

    // Drop: test traffic goes nowhere, and nothing is stored.
    let d = publish(
        &host,
        "orders.created",
        json!({"payload": {"region": "eu"}, "headers": {"x-test": "true"}}),
    )
    .await;
    assert!(d.is_empty(), "dropped: {d:?}");
    let out = host.cli([
        "publish",
        "orders.created",
        r#"{"region": "eu"}"#,
        "--header",
        "x-test=true",
    ]);
    out.expect_success("a dropped publish is not an error");
    assert!(out.stdout.contains("dropped"), "{}", out.stdout);

    // Deliver unchanged: no usable field, so the route's own queue, headers untouched.
    let d = publish(&host, "orders.created", json!({"payload": {"id": 8}})).await;
    assert_eq!(queues_of(&d), ["orders"]);
    let m = host.get_message(d[0]["id"].as_str().unwrap()).await;
    assert_eq!(m["payload"], json!({"id": 8}));
    assert!(m["headers"].get("routed-by").is_none(), "{m}");

    assert_eq!(enqueued(&host, "orders").await, 1);
    assert_eq!(enqueued(&host, "orders-eu").await, 1);
    let metrics = host.get("/metrics").await.text;
    for outcome in ["transform", "drop", "deliver"] {
        let line = format!(
            "spool_filter_decisions_total{{filter=\"route-by-field\",outcome=\"{outcome}\"}}"
        );
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line} in:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_filters_dead_letter_and_replay_reruns_the_route() {
    let host = TestHost::start();
    host.deploy("misbehave-filter", &plugin_path("misbehave_filter"))
        .await;
    holding_queue(&host, "jobs").await;
    let out = host.cli([
        "route",
        "add",
        "jobs",
        "jobs",
        "--filter",
        "misbehave-filter",
        "--timeout-ms",
        "500",
        "--fuel",
        "50000000",
        "--memory-mb",
        "16",
    ]);
    out.expect_success("route with filter limits");
    let route = host
        .get(&format!("/v1/routes/{}", route_id(&out.stdout)))
        .await
        .expect(200, "the route");
    assert_eq!(route["timeout_ms"], 500, "{route}");
    assert_eq!(route["memory_mb"], 16, "{route}");

    // Each failure becomes a dead letter of the route's queue, category `filter`.
    let mut dead = Vec::new();
    for what in ["trap", "loop", "alloc"] {
        let d = publish(&host, "jobs", json!({"payload": {"do": what}})).await;
        assert_eq!(d.len(), 1, "{what}: {d:?}");
        assert_eq!(d[0]["queue"], "jobs");
        assert_eq!(d[0]["dead"], true, "{what}: {d:?}");
        let m = host.get_message(d[0]["id"].as_str().unwrap()).await;
        assert_eq!(m["state"], "dead", "{m}");
        assert_eq!(m["error_category"], "filter", "{m}");
        assert_eq!(m["payload"], json!({"do": what}), "nothing lost: {m}");
        dead.push(d[0]["id"].as_str().unwrap().to_owned());
    }
    // A good message still passes the same filter.
    let d = publish(&host, "jobs", json!({"payload": {"ok": true}})).await;
    assert_ne!(d[0]["dead"], true, "{d:?}");
    let s = host.stats("jobs").await;
    assert_eq!((s.ready, s.dead, s.enqueued), (1, 3, 4), "{s:?}");
    let listed = host.cli(["dlq", "list", "--category", "filter", "--json"]);
    listed.expect_success("dlq list --category filter");
    let v: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 3, "{v}");

    // Replay runs the route again: the same filter fails again, the dead letter stays.
    let (trap, looping, alloc) = (&dead[0], &dead[1], &dead[2]);
    let out = host.cli(["dlq", "replay", alloc]);
    out.expect_failure("replaying into a filter that still fails");
    assert!(out.stderr.contains("filter"), "{}", out.stderr);
    assert_eq!(host.state(alloc).await, "dead");
    // --skip-filter delivers to the route's queue without the filter.
    host.cli(["dlq", "replay", looping, "--skip-filter"])
        .expect_success("replay --skip-filter");
    assert_eq!(host.stats("jobs").await.ready, 2);
    // With the filter fixed (a new version that delivers), a plain replay goes through it.
    host.deploy("misbehave-filter", &plugin_path("route_all"))
        .await;
    host.cli(["dlq", "replay", trap])
        .expect_success("replay through the fixed filter");
    let s = host.stats("jobs").await;
    assert_eq!((s.ready, s.dlq_depth), (3, 1), "{s:?}");

    let metrics = host.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("spool_filter_errors_total{") && l.contains("misbehave-filter")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_publishes_commit_only_with_the_ack() {
    let host = TestHost::start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    misbehave_queue(&host, "parent", 2).await;
    holding_queue(&host, "child").await;

    let then = |then: Value| json!({"do": "publish-then", "topic": "child", "body": {"from": then["do"]}, "then": then});
    let acked = host
        .enqueue_one(
            "parent",
            json!({"do": "publish", "topic": "child", "body": {"n": 1}}),
        )
        .await;
    let mut failed = Vec::new();
    for t in [
        json!({"do": "retry"}),
        json!({"do": "trap"}),
        json!({"do": "dead-letter", "reason": "no"}),
    ] {
        failed.push(host.enqueue_one("parent", then(t)).await);
    }
    assert_eq!(host.wait_until_final(&acked, WAIT).await["state"], "acked");
    for id in &failed {
        let m = host.wait_until_final(id, WAIT).await;
        assert_eq!(m["state"], "dead", "{m}");
    }
    // Exactly one child: the acked parent's. Retried, trapped and dead-lettered parents
    // published on every attempt, and every one of those publishes was discarded.
    let s = host.stats("child").await;
    assert_eq!(s.enqueued, 1, "{s:?}");
    let items = host
        .get("/v1/queues/child/messages")
        .await
        .expect(200, "child messages");
    let child = &items["items"][0];
    assert_eq!(child["payload"], json!({"n": 1}), "{items}");
    assert_eq!(child["topic"], "child");
    let full = host.get_message(child["id"].as_str().unwrap()).await;
    assert_eq!(full["headers"]["from"], "misbehave", "{full}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_killed_before_its_ack_publishes_once() {
    let mut host = TestHost::options()
        .args(["--maintenance-interval", "200ms"])
        .start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    host.put_queue(
        "parent",
        // Busy-waiting 3 s takes more than the default fuel.
        json!({"handler": "misbehave", "lease_ms": 1500, "max_attempts": 5,
               "fuel": 1_000_000_000_000u64, "timeout_ms": 20_000}),
    )
    .await;
    holding_queue(&host, "child").await;
    // Publishes first, then works for 3 s before acking: the kill lands in between.
    let id = host
        .enqueue_one(
            "parent",
            json!({"do": "publish-then", "topic": "child", "body": {"n": 1},
                   "then": {"do": "sleep-ms", "ms": 3000}}),
        )
        .await;
    host.wait_state(&id, "leased", WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.kill9();
    host.restart();
    assert_eq!(
        enqueued(&host, "child").await,
        0,
        "the publish of an unacked handler is not committed"
    );
    let m = host.wait_until_final(&id, WAIT).await;
    assert_eq!(m["state"], "acked", "{m}");
    assert_eq!(m["attempts"], 2, "redelivered once after the kill: {m}");
    assert_eq!(
        enqueued(&host, "child").await,
        1,
        "two runs published, one ack committed: one child"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_republishes_itself_stops_at_the_depth_limit() {
    let host = TestHost::start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    misbehave_queue(&host, "loop", 1).await;
    // No route: the implicit one takes topic `loop` to queue `loop`.
    let d = publish(&host, "loop", json!({"payload": {"do": "republish"}})).await;
    assert_eq!(queues_of(&d), ["loop"]);
    let s = host
        .wait_stats("loop", "the chain to end", WAIT, |s| {
            s.dead == 1 && s.live() == 0
        })
        .await;
    // Depths 0 to 16 are handled; the last one's publish is refused and it dead-letters.
    assert_eq!((s.enqueued, s.acked), (17, 16), "{s:?}");
    let dlq = host.get("/v1/dlq?queue=loop").await.expect(200, "dlq");
    let error = dlq["items"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("max_chain_depth") && error.contains("16"),
        "the dead letter says why: {dlq}"
    );
    assert!(
        host.log_tail(200).contains("max_chain_depth"),
        "the plugin's log line names the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_draws_a_three_level_chain() {
    let host = TestHost::start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    misbehave_queue(&host, "a", 1).await;
    misbehave_queue(&host, "b", 1).await;
    holding_queue(&host, "c").await;
    let d = publish(
        &host,
        "a",
        json!({"payload": {"do": "publish", "topic": "b",
                           "body": {"do": "publish", "topic": "c", "body": {"n": 3}}},
               "correlation_id": "order-42"}),
    )
    .await;
    let root = d[0]["id"].as_str().unwrap().to_owned();
    host.wait_stats("c", "the third level", WAIT, |s| s.enqueued == 1)
        .await;
    let c_id = host.get("/v1/queues/c/messages").await.json["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Any member of the chain shows all of it.
    let trace = host
        .get(&format!("/v1/messages/{c_id}/trace"))
        .await
        .expect(200, "trace");
    assert_eq!(trace["correlation_id"], "order-42", "{trace}");
    let msgs = trace["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{trace}");
    let b_id = msgs
        .iter()
        .find(|m| m["queue"] == "b")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(
        msgs.iter()
            .any(|m| m["id"] == b_id.as_str() && m["parent_id"] == root.as_str())
    );
    assert!(
        msgs.iter()
            .any(|m| m["id"] == c_id.as_str() && m["parent_id"] == b_id.as_str())
    );
    host.wait_state(&b_id, "acked", WAIT).await;

    let out = host.cli(["message", "trace", &root]);
    out.expect_success("spool message trace");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "correlation id order-42", "{}", out.stdout);
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[3]),
        [root.as_str(), "a", "a", "acked", "misbehave@1"],
        "{}",
        out.stdout
    );
    assert_eq!(
        words(lines[4]),
        ["└─", b_id.as_str(), "b", "b", "acked", "misbehave@1"],
        "{}",
        out.stdout
    );
    assert_eq!(
        words(lines[5]),
        ["└─", c_id.as_str(), "c", "c", "ready", "-"],
        "{}",
        out.stdout
    );
    assert!(lines[5].starts_with("   └─ "), "{}", out.stdout);
    let json_out = host.cli(["message", "trace", &root, "--json"]);
    let v: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_publishes_are_refused_or_kept() {
    // Without routes, a matching queue or an unroutable queue: 422 and nothing stored.
    let host = TestHost::start();
    holding_queue(&host, "orders").await;
    let code = host
        .post("/v1/topics/nowhere/messages", &json!({"payload": 1}))
        .await
        .expect_error(422, "publish with no route");
    assert_eq!(code, "no_route");
    let out = host.cli(["publish", "nowhere", "1"]);
    out.expect_failure("spool publish with no route");
    assert!(out.stderr.contains("spool route add"), "{}", out.stderr);
    assert_eq!(enqueued(&host, "orders").await, 0);
    let list = host.get("/v1/routes").await.expect(200, "routes");
    assert_eq!(list["unroutable_total"], 2, "{list}");
    // The implicit route: a topic named like a queue.
    let d = publish(&host, "orders", json!({"payload": 1})).await;
    assert_eq!(queues_of(&d), ["orders"]);
    drop(host);

    // Routes and the router from spool.toml: implicit routes off, an unroutable queue.
    let host = TestHost::options()
        .config(
            "[router]\nimplicit_routes = false\nunroutable_queue = \"lost\"\n\n\
             [queues.orders]\n[queues.lost]\n[queues.audit]\n\n\
             [[routes]]\npattern = \"orders.*\"\nqueue = \"orders\"\n\n\
             [[routes]]\npattern = \"#\"\nqueue = \"audit\"\nheaders = { audit = \"yes\" }\n",
        )
        .start();
    let list = host.get("/v1/routes").await.expect(200, "routes");
    assert_eq!(list["routes"].as_array().unwrap().len(), 2, "{list}");
    let d = publish(&host, "orders.created", json!({"payload": 1})).await;
    assert_eq!(queues_of(&d), ["orders"]);
    let d = publish(
        &host,
        "billing",
        json!({"payload": 2, "headers": {"audit": "yes"}}),
    )
    .await;
    assert_eq!(queues_of(&d), ["audit"]);
    // `orders` is a queue, but with implicit routes off the topic matches nothing.
    let d = publish(&host, "orders", json!({"payload": 3})).await;
    assert_eq!(queues_of(&d), ["lost"]);
    let d = publish(&host, "nowhere", json!({"payload": 4})).await;
    assert_eq!(queues_of(&d), ["lost"]);
    assert_eq!(enqueued(&host, "lost").await, 2);
    let list = host.get("/v1/routes").await.expect(200, "routes");
    assert_eq!(list["unroutable_total"], 2, "{list}");
    assert_eq!(list["published_total"], 4, "{list}");
    let metrics = host.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l == "spool_router_unroutable_total 2"),
        "{metrics}"
    );
}

const ADMIN: &str = "admin-secret-r";
const PRODUCER: &str = "producer-secret-r";
const READER: &str = "reader-secret-r";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_the_routing_endpoints() {
    let mut toml = String::new();
    for (name, role, token) in [
        ("ops", "admin", ADMIN),
        ("shop", "producer", PRODUCER),
        ("dash", "reader", READER),
    ] {
        toml.push_str(&format!(
            "[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{:x}\"\n\n",
            Sha256::digest(token.as_bytes())
        ));
    }
    let host = TestHost::options().config(toml).token(ADMIN).start();
    holding_queue(&host, "orders").await;
    let route = host
        .post(
            "/v1/routes",
            &json!({"pattern": "orders.*", "queue": "orders"}),
        )
        .await
        .expect(201, "admin adds a route");
    let id = route["id"].as_str().unwrap().to_owned();
    let first = publish(&host, "orders.created", json!({"payload": 1})).await;
    let msg = first[0]["id"].as_str().unwrap().to_owned();

    let new_route = json!({"pattern": "x.*", "queue": "orders"});
    let body = json!({"payload": 2});
    let empty = json!({});
    // (method, path, body, [no token, admin, producer, reader])
    let cases: Vec<(Method, String, Option<&Value>, [u16; 4])> = vec![
        (Method::GET, "/v1/routes".into(), None, [401, 200, 403, 200]),
        (
            Method::GET,
            format!("/v1/routes/{id}"),
            None,
            [401, 200, 403, 200],
        ),
        (
            Method::POST,
            "/v1/routes".into(),
            Some(&new_route),
            [401, 201, 403, 403],
        ),
        (
            Method::POST,
            "/v1/topics/orders.created/messages".into(),
            Some(&body),
            [401, 202, 202, 403],
        ),
        (
            Method::GET,
            format!("/v1/messages/{msg}/trace"),
            None,
            [401, 200, 403, 200],
        ),
        (
            Method::POST,
            "/v1/dlq/999999/replay?skip_filter=true".into(),
            Some(&empty),
            [401, 404, 403, 403],
        ),
        (
            Method::DELETE,
            "/v1/routes/999999".into(),
            None,
            [401, 404, 403, 403],
        ),
    ];
    for (method, path, body, want) in &cases {
        for (token, status) in [None, Some(ADMIN), Some(PRODUCER), Some(READER)]
            .into_iter()
            .zip(want)
        {
            let reply = host.call_as(token, method.clone(), path, *body).await;
            assert_eq!(
                reply.status.as_u16(),
                *status,
                "{method} {path} as {token:?}: {}",
                reply.text
            );
        }
    }
    // Refusals changed nothing: the admin's second route and the two 202 publishes only.
    let list = host.get("/v1/routes").await.expect(200, "routes");
    assert_eq!(list["routes"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(enqueued(&host, "orders").await, 3);

    // The CLI sends SPOOL_TOKEN like any client command.
    let as_reader = run_cli(
        Some(host.url()),
        &[("SPOOL_TOKEN", READER)],
        None,
        &["route", "delete", &id],
    );
    as_reader.expect_failure("a reader cannot delete routes");
    let as_admin = run_cli(
        Some(host.url()),
        &[("SPOOL_TOKEN", ADMIN)],
        None,
        &["route", "delete", &id],
    );
    as_admin.expect_success("an admin deletes a route");
    let as_producer = run_cli(
        Some(host.url()),
        &[("SPOOL_TOKEN", PRODUCER)],
        None,
        &["publish", "orders", "{}"],
    );
    as_producer.expect_success("a producer publishes (implicit route to orders)");
    wait_until("the producer's message", WAIT, || async {
        let n = enqueued(&host, "orders").await;
        if n == 4 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
}
