"""`ec2emu`: serve the API, report coverage of the EC2 model."""
from __future__ import annotations

import argparse
import logging
import sys


def _serve(args) -> int:
    import uvicorn

    from api.app import create_app
    from emulator.config import load_config
    from emulator.service import Cloud

    config = load_config(args.config, {
        "host": args.host, "port": args.port, "state_dir": args.state_dir,
        "database_url": args.database_url, "hypervisor": args.hypervisor,
        "default_region": args.region,
    })
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cloud = Cloud(config)
    print(f"ec2emu: EC2 API on http://{config.host}:{config.port}/ "
          f"(driver {config.hypervisor}, database {config.effective_database_url.split('@')[-1]})", flush=True)
    for cred in config.credentials:
        print(f"ec2emu: access key {cred.access_key}  secret {cred.secret_key}  account {cred.account_id}",
              flush=True)
    print(f"ec2emu: try: AWS_ACCESS_KEY_ID={config.credentials[0].access_key} "
          f"AWS_SECRET_ACCESS_KEY={config.credentials[0].secret_key} "
          f"aws --endpoint-url http://{config.host}:{config.port} --region {config.default_region} "
          f"ec2 describe-instances", flush=True)
    uvicorn.run(create_app(cloud), host=config.host, port=config.port, log_level="warning",
                access_log=False)
    return 0


def _coverage(args) -> int:
    from api import model
    from emulator.registry import HANDLERS
    import emulator.service  # noqa: F401  (registers handlers)

    names = model.operation_names()
    wanted = set()
    if args.tier1:
        with open(args.tier1) as f:
            wanted = {line.split("#")[0].strip() for line in f} - {""}
    done = [n for n in names if n in HANDLERS]
    for n in names:
        if args.all or n in HANDLERS or n in wanted:
            print(f"{'x' if n in HANDLERS else ' '} {n}{'  (tier 1)' if n in wanted else ''}")
    print(f"{len(done)} of {len(names)} operations implemented"
          + (f"; tier 1: {len(wanted & set(done))} of {len(wanted)}" if wanted else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ec2emu", description="A local EC2 emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the EC2 API server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--state-dir")
    serve.add_argument("--database-url")
    serve.add_argument("--hypervisor", choices=["libvirt", "none"])
    serve.add_argument("--region", help="region for requests that do not name one (SigV2)")
    serve.add_argument("--config", help="TOML file with settings (see README)")
    serve.set_defaults(fn=_serve)
    cov = sub.add_parser("coverage", help="list the EC2 model's operations this emulator implements")
    cov.add_argument("--all", action="store_true", help="list unimplemented operations too")
    cov.add_argument("--tier1", help="a file of operation names (one a line) to mark and count")
    cov.set_defaults(fn=_coverage)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
