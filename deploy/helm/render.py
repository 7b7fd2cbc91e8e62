#!/usr/bin/env python3
"""Renders the chart offline with the Helm library (helm-python-sdk), as `helm template` would.

    render.py CHART [--values FILE]... [--set-json KEY=JSON]... [--notes] [--lint]

Prints the manifests as one multi-document YAML stream (NOTES.txt left out; --notes prints it
instead), each document headed by `# Source: <template>`. Values are checked against the
chart's values.schema.json first, as `helm install` does. --lint runs `helm lint --strict`
and prints its findings. Exits 1 with Helm's message when the values or a template are wrong,
2 when helm-python-sdk is missing (`pip install helm-python-sdk`).
"""

import argparse
import sys

try:
    import helm_python as helm
except ImportError:
    sys.stderr.write("render.py: helm-python-sdk is not installed: pip install helm-python-sdk\n")
    sys.exit(2)


def merge(base, over):
    """Deep-merges `over` into `base`, as Helm merges several --values files."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart")
    parser.add_argument("--values", "-f", action="append", default=[])
    parser.add_argument("--set-json", action="append", default=[])
    parser.add_argument("--name", default="kube-event-pipe")
    parser.add_argument("--namespace", default="kube-event-pipe")
    parser.add_argument("--notes", action="store_true")
    parser.add_argument("--lint", action="store_true")
    args = parser.parse_args()

    helm.disable_logging()
    values = {}
    for path in args.values:
        with open(path, encoding="utf-8") as f:
            merge(values, helm.values_from_yaml(f.read()) or {})
    for expr in args.set_json:
        merge(values, helm.parse_set_json(expr))

    try:
        if args.lint:
            report = helm.lint(args.chart, values, strict=True, namespace=args.namespace)
            problems = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
            for m in report.get("messages") or []:
                print(f"[{m.get('severity')}] {m.get('path')}: {m.get('error')}")
            for e in report.get("errors") or []:
                print(f"error: {e}")
            return 1 if problems or report.get("errors") else 0
        chart = helm.Chart.load(args.chart)
        chart.validate_schema(values)
        rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    except helm.HelmError as e:
        sys.stderr.write(f"render.py: {e}\n")
        return 1

    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt"):
            if args.notes:
                sys.stdout.write(text)
            continue
        if args.notes or not text.strip():
            continue
        sys.stdout.write(f"---\n# Source: {path}\n{text.strip()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
