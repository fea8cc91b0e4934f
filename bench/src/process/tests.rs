use super::*;

#[test]
fn metric_sum_adds_every_series_of_the_name_only() {
    let text = "# HELP pilot_xds Connected xDS streams.
# TYPE pilot_xds gauge
pilot_xds{version=\"1.26.0\"} 1500
pilot_xds{version=\"unknown\"} 2
pilot_xds_pushes{type=\"cds\"} 99
pilot_tokio_alive_tasks 4021
go_goroutines 310 1700000000000
";
    assert_eq!(metric_sum(text, "pilot_xds"), Some(1502.0));
    assert_eq!(metric_sum(text, "pilot_tokio_alive_tasks"), Some(4021.0));
    assert_eq!(metric_sum(text, "go_goroutines"), Some(310.0));
    assert_eq!(metric_sum(text, "pilot_xds_write_timeout"), None);
}

#[test]
fn dechunk_joins_the_chunks() {
    assert_eq!(
        dechunk("5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"),
        "hello, world"
    );
    assert_eq!(dechunk(""), "");
}
