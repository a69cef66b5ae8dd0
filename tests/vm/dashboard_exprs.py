"""The PromQL of the container panels of two public cAdvisor dashboards, kept
for tests/vm/test_dashboards_vm.py (every target that uses container_* series).

- "Cadvisor exporter", grafana.com dashboard 14282, as copied in
  github.com/stefanprodan/dockprom, grafana/provisioning/dashboards/cadvisor.json
  (blob 57da9acb).
- "Docker and system monitoring", grafana.com dashboard 893, as copied in
  github.com/vegasbrianc/prometheus at commit 34ca4c0 (its node_exporter
  panels are node_exporter's, not ours, and are left out).

Template variables as the dashboards define them: $host, $container (label
values: any), $interval (chosen by the viewer: 1m here).
"""

PANELS = (
    ('14282', 'CPU Usage', (
        'sum(rate(container_cpu_usage_seconds_total{instance=~"$host",name=~"$container",name=~".+"}[5m])) by (name) *100',
    )),
    ('14282', 'Memory Usage', (
        'sum(container_memory_rss{instance=~"$host",name=~"$container",name=~".+"}) by (name)',
    )),
    ('14282', 'Memory Cached', (
        'sum(container_memory_cache{instance=~"$host",name=~"$container",name=~".+"}) by (name)',
    )),
    ('14282', 'Received Network Traffic', (
        'sum(rate(container_network_receive_bytes_total{instance=~"$host",name=~"$container",name=~".+"}[5m])) by (name)',
    )),
    ('14282', 'Sent Network Traffic', (
        'sum(rate(container_network_transmit_bytes_total{instance=~"$host",name=~"$container",name=~".+"}[5m])) by (name)',
    )),
    ('14282', 'Containers Info', (
        '(time() - container_start_time_seconds{instance=~"$host",name=~"$container",name=~".+"})/86400',
    )),
    ('893', 'Containers', (
        'count(rate(container_last_seen{name=~".+"}[$interval]))',
    )),
    ('893', 'Network Traffic', (
        'sum(rate(container_network_receive_bytes_total{id="/"}[$interval])) by (id)',
        '- sum(rate(container_network_transmit_bytes_total{id="/"}[$interval])) by (id)',
    )),
    ('893', 'CPU Usage', (
        'sum(rate(container_cpu_system_seconds_total[1m]))',
        'sum(rate(container_cpu_system_seconds_total{name=~".+"}[1m]))',
        'sum(rate(container_cpu_system_seconds_total{id="/"}[1m]))',
        'sum(rate(container_cpu_system_seconds_total{name=~".+"}[1m])) + sum(rate(container_cpu_system_seconds_total{id="/"}[1m])) + sum(rate(process_cpu_seconds_total[1m]))',
    )),
    ('893', 'Available Memory', (
        'container_memory_rss{name=~".+"}',
        'sum(container_memory_rss{name=~".+"})',
        'container_memory_usage_bytes{name=~".+"}',
        'container_memory_rss{id="/"}',
        'sum(container_memory_rss)',
        'container_memory_rss{name=~".+"}',
    )),
    ('893', 'CPU Usage per Container', (
        'sum(rate(container_cpu_usage_seconds_total{name=~".+"}[$interval])) by (name) * 100',
    )),
    ('893', 'Memory Usage per Container', (
        'sum(container_memory_rss{name=~".+"}) by (name)',
        'container_memory_usage_bytes{name=~".+"}',
    )),
    ('893', 'Sent Network Traffic per Container', (
        'sum(rate(container_network_transmit_bytes_total{name=~".+"}[$interval])) by (name)',
        'rate(container_network_transmit_bytes_total{id="/"}[$interval])',
    )),
    ('893', 'Received Network Traffic per Container', (
        'sum(rate(container_network_receive_bytes_total{name=~".+"}[$interval])) by (name)',
        '- rate(container_network_transmit_bytes_total{name=~".+"}[$interval])',
    )),
    ('893', 'Memory Swap per Container', (
        'sum(container_memory_swap{name=~".+"}) by (name)',
        'container_memory_usage_bytes{name=~".+"}',
    )),
    ('893', 'Usage memory', (
        'sum(container_spec_memory_limit_bytes{name=~".+"} - container_memory_usage_bytes{name=~".+"}) by (name) ',
        'sum(container_spec_memory_limit_bytes{name=~".+"}) by (name) ',
        'container_memory_usage_bytes{name=~".+"}',
    )),
    ('893', 'Remaining memory', (
        'sum(100 - ((container_spec_memory_limit_bytes{name=~".+"} - container_memory_usage_bytes{name=~".+"})  * 100 / container_spec_memory_limit_bytes{name=~".+"}) ) by (name) ',
        'sum(container_spec_memory_limit_bytes{name=~".+"}) by (name) ',
        'container_memory_usage_bytes{name=~".+"}',
    )),
    ('893', 'Limit memory', (
        'sum(container_spec_memory_limit_bytes{name=~".+"} - container_memory_usage_bytes{name=~".+"}) by (name) ',
        'sum(container_spec_memory_limit_bytes{name=~".+"}) by (name) ',
        'container_memory_usage_bytes{name=~".+"}',
    )),
)

VARIABLES = {"$host": ".*", "$container": ".*", "$interval": "1m"}

# Families a target needs that are not container series of ours: Prometheus's own
# process metrics (893 adds its CPU into one target).
NOT_OURS = ("process_cpu_seconds_total",)


def promql(expr: str) -> str:
    for k, v in VARIABLES.items():
        expr = expr.replace(k, v)
    return expr
