"""`make demo`: a store's morning, replayed through the whole local stack.

Headquarters sets up a store (org synced from WeCom, a new-customer coupon, a campaign with
a welcome message, one QR code per staff member); customers scan at the till and are
welcomed with a coupon inside WeCom's 20-second window while WeCom re-sends some callbacks
and fails some API calls; some redeem at the till (two tills try the same code at once);
one customer deletes their staff member; one callback is lost and the nightly
reconciliation (a job, like the bulk creation of codes) heals it. It ends with a per-staff table and exits non-zero if any of what
it shows did not hold.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".local" / "logs" / "demo"
STORE = "1001"
STAFF = [("zhangsan", "张三"), ("lisi", "李四"), ("wangwu", "王五")]
MORNING = ["zhangsan", "zhangsan", "lisi", "zhangsan", "wangwu", "lisi", "zhangsan", "wangwu", "lisi", "zhangsan"]


def seed_store(sim, corp_id: str) -> None:
    """A branch, a region and one store with three staff in the simulated address book.

    The local stack seeds its generated demo corp with it, so `make up` has someone to add
    customers to; re-seeding changes nothing (the simulator upserts)."""
    sim.add_department(corp_id, 10, "华东分公司", parentid=1)
    sim.add_department(corp_id, 100, "上海区域", parentid=10)
    sim.add_department(corp_id, int(STORE), "南京西路店", parentid=100)
    for userid, name in STAFF:
        sim.add_staff(corp_id, userid, name, department=(int(STORE),), mobile="13800001111")


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"── {title} " + "─" * max(0, 66 - len(title)))


class Demo:
    def __init__(self, stack):
        self.stack = stack
        self.sim = stack.sim
        self.corp = stack.corps[0]
        self.corp_id = self.corp.corp_id
        self.ops = requests.Session()
        self.ops.headers["Authorization"] = f"Bearer {stack.ops_token(self.corp_id)}"
        self.problems: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        say(f"   {'✓' if ok else '✗'} {what}")
        if not ok:
            self.problems.append(what)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.ops.request(method, f"{self.stack.gateway_url}/ops{path}", timeout=30, **kwargs)

    def job(self, job_id: str, timeout: float = 60) -> dict:
        """A job (GET /ops/jobs/{job_id}) once it has finished."""
        give_up = time.monotonic() + timeout
        while True:
            job = self.api("GET", f"/jobs/{job_id}").json()
            if job.get("finished_at") or time.monotonic() > give_up:
                return job
            time.sleep(0.2)

    def bulk(self, body: dict) -> dict:
        started = self.api("POST", "/contact-ways/bulk", json=body)
        job = self.job(started.json()["job_id"])
        say(f"   job {job['job_id']}: {job['state']}, {job['done']} of {job['total']} staff done")
        return job.get("result") or {}

    # -- headquarters sets up the store ---------------------------------------------------
    def org(self) -> None:
        step("1. The org tree comes from WeCom's address book")
        seed_store(self.sim, self.corp_id)
        [started] = self.stack.fire_schedule("OrgSyncFunction")["jobs"]  # the nightly sync, run now: a job
        report = self.job(started["job_id"])["result"]
        say(f"   synced {report['departments']} departments, {report['staff']} staff; "
            f"branch → region → store by depth")
        stores = self.api("GET", "/stores").json()["items"]
        staff = self.api("GET", "/staff", params={"store_id": STORE}).json()["items"]
        say(f"   stores: {', '.join(s['name'] + ' (' + s['store_id'] + ')' for s in stores)}")
        say(f"   staff of {STORE}: {', '.join(s['userid'] for s in staff)}")
        self.check(len(staff) == len(STAFF), "every staff member belongs to the store")

    def offer(self) -> None:
        step("2. A new-customer coupon and a campaign with a welcome message")
        template = self.api("POST", "/coupon-templates", json={
            "name": "新客立减20元", "kind": "amount", "amount": 2000, "threshold": 10000,
            "valid_days": 30, "per_customer_limit": 1, "total_stock": 100}).json()
        self.template_id = template["template_id"]
        campaign = self.api("POST", "/campaigns", json={
            "name": "开业季", "coupon_template_id": self.template_id,
            "welcome": {"text": "欢迎光临南京西路店！您的新客券 {coupon_code} 已到账，到店消费满100减20。",
                        "link": {"title": "查看我的新客券", "url": "https://shop.example.com/coupon?c={coupon_code}"},
                        "without_coupon": {"text": "欢迎光临南京西路店！新客活动详情请点下方链接。",
                                           "link": {"title": "开业季活动", "url": "https://shop.example.com/opening"}}},
        }).json()
        self.campaign_id = campaign["campaign_id"]
        say(f"   coupon template {self.template_id}: ¥20 off ¥100, 30 days, stock 100, one per customer")
        say(f"   campaign {self.campaign_id}: welcome text + link card carrying the coupon code "
            "(and what to say when no coupon can be issued)")

    def codes(self) -> None:
        step("3. One QR code per staff member (一人一码), in bulk for the store")
        report = self.bulk({"store_id": STORE, "campaign_id": self.campaign_id, "channel": "qr"})
        again = self.bulk({"store_id": STORE, "campaign_id": self.campaign_id, "channel": "qr"})
        ways = self.api("GET", "/contact-ways", params={"owner_kind": "staff"}).json()["items"]
        self.state_of = {w["users"][0]: w["state"] for w in ways}
        for userid, state in sorted(self.state_of.items()):
            say(f"   {userid:<9} state={state:<30} config_id={next(w['config_id'] for w in ways if w['state'] == state)}")
        self.check(_count(report, "created") == len(STAFF) and _count(again, "created") == 0,
                   "bulk creation is idempotent: a second run creates nothing")

    # -- the morning ------------------------------------------------------------------------
    def morning(self) -> None:
        step("4. The morning: customers scan at the till")
        # Instances ready before the store opens, as provisioned concurrency would have them.
        self.stack.warm({name: self.stack.functions[name].max_instances
                         for name in ("CallbackFunction", "WelcomeFunction", "WorkerFunction")})
        self.sim.set_faults(0.2, ["-1", "45033", "http502"], seed=7)
        say("   WeCom's API fails 20% of calls (-1, 45033, HTTP 502); some callbacks are re-sent 3 times")
        self.customers: list[tuple[str, str]] = []
        for i, userid in enumerate(MORNING):
            added = self.sim.add_customer(self.corp_id, userid=userid, state=self.state_of[userid],
                                          name=f"顾客{i + 1}", repeat=3 if i % 4 == 0 else 1)
            self.customers.append((added["external_userid"], userid))
        self.stack.drain(timeout=60)
        self.sim.set_faults(0, [])
        welcomes = self.sim.welcomes(self.corp_id)
        elapsed = sorted(w["elapsed"] for w in welcomes)
        say(f"   {len(welcomes)} welcomes sent for {len(self.customers)} new customers; "
            f"slowest {elapsed[-1]:.2f} s after the scan (WeCom allows 20 s)")
        self.coupon_of = {}
        for external_userid, _ in self.customers:
            held = self.api("GET", f"/customers/{external_userid}/coupons").json()["items"]
            self.coupon_of[external_userid] = held[0]["code"] if held else None
        welcome_of = {w["external_userid"]: w for w in welcomes}
        self.check(len(welcome_of) == len(welcomes) == len(self.customers), "every customer welcomed exactly once")
        self.check(all(e < 20 for e in elapsed), "every welcome inside the 20-second window")
        self.check(all(code and code in str(welcome_of.get(c)) for c, code in self.coupon_of.items()),
                   "every welcome carries that customer's own coupon code")
        stock = self.api("GET", f"/coupon-templates/{self.template_id}").json()
        self.check(stock["stock"]["issued"] == len(self.customers), f"one coupon each: {stock['stock']['issued']} issued")

    def till(self) -> None:
        step("5. At the till: customers redeem their coupons")
        redeemers = self.customers[:4]
        for n, (external_userid, _) in enumerate(redeemers):
            answer = self.api("POST", "/coupons/redeem", json={
                "code": self.coupon_of[external_userid], "store_id": STORE, "staff_userid": "lisi",
                "request_id": f"pos-1-{n}"})
            say(f"   till 1 redeems {self.coupon_of[external_userid]}: {answer.status_code}")
        contested = self.coupon_of[self.customers[4][0]]
        results = []

        def till(n: int) -> None:
            results.append(self.api("POST", "/coupons/redeem", json={
                "code": contested, "store_id": STORE, "staff_userid": "wangwu", "request_id": f"pos-{n}-x"}).status_code)

        threads = [threading.Thread(target=till, args=(n,)) for n in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        say(f"   tills 2 and 3 redeem {contested} at the same moment: {sorted(results)}")
        self.check(sorted(results) == [200, 409], "exactly one till succeeds, the other hears 409 already_redeemed")

    def churn(self) -> None:
        step("6. One customer deletes their staff member; one callback is lost")
        gone, staff = self.customers[1]
        self.sim.delete_follow(self.corp_id, userid=staff, external_userid=gone)
        lost = self.sim.add_customer(self.corp_id, userid="wangwu", state=self.state_of["wangwu"],
                                     name="顾客11", deliver=False)
        self.lost_customer = lost["external_userid"]
        self.stack.drain(timeout=30)
        view = self.api("GET", f"/customers/{gone}").json()
        status = next(f["status"] for f in view["follows"] if f["userid"] == staff)
        say(f"   {gone} deleted {staff}: follow is now {status}")
        self.check(status == "deleted_by_customer", "the deletion is recorded")
        self.check(self.api("GET", f"/customers/{self.lost_customer}").status_code == 404,
                   "the customer whose callback was lost is unknown to us (for now)")

    def night(self) -> None:
        step("7. Night: org sync and reconciliation against WeCom's pull APIs, each a job")
        for schedule in ("OrgSyncFunction", "ReconcileFunction"):
            started = self.stack.fire_schedule(schedule)
            for job in (self.job(j["job_id"], timeout=120) for j in started["jobs"]):
                say(f"   job {job['job_id']}: {job['state']}")
                if job["kind"] == "reconcile":
                    say(f"   reconciliation: {_summary(job)}")
                self.check(job["state"] == "done", f"the {job['kind']} job is done")
        view = self.api("GET", f"/customers/{self.lost_customer}")
        self.check(view.status_code == 200, "the lost customer is repaired from batch/get_by_user")

    # -- the figures --------------------------------------------------------------------------
    def table(self) -> None:
        step("8. Per staff member, today (GET /ops/stats/daily, from the stream)")
        from scrm.platform.config import business_day

        self.stack.drain(timeout=60)  # the stats projector has read the stream to its end
        day = business_day(time.time())
        head = f"   {'staff':<10}{'new customers':>15}{'welcomes sent':>15}{'coupons issued':>16}{'redeemed':>10}{'lost':>6}"
        say(head)
        say("   " + "-" * (len(head) - 3))
        totals = [0, 0, 0, 0, 0]
        for userid, _ in STAFF:
            [c] = self.api("GET", "/stats/daily", params={"scope": "staff", "scope_id": userid, "from": day,
                                                          "to": day}).json()["items"]
            row = [c["new_customers"], c["welcomes_sent"], c["coupons_issued"], c["coupons_redeemed"],
                   c["lost_customers"] + c["deleted_customers"]]
            totals = [a + b for a, b in zip(totals, row)]
            say(f"   {userid:<10}{row[0]:>15}{row[1]:>15}{row[2]:>16}{row[3]:>10}{row[4]:>6}")
        say(f"   {'total':<10}{totals[0]:>15}{totals[1]:>15}{totals[2]:>16}{totals[3]:>10}{totals[4]:>6}")
        self.check(totals[1] == len(self.customers) and totals[2] == len(self.customers),
                   "welcomes and coupons counted once per customer despite re-sends and API failures")
        self.check(totals[0] == len(self.customers) + 1,
                   "new customers include the one whose callback was lost, counted once the night found them")
        self.check(totals[3] == 5, "five redemptions credited to the staff who brought the customers")
        self.check(totals[4] == 1, "the customer who deleted their staff member is counted as lost")
        ranking = self.api("GET", "/stats/ranking", params={"scope": "staff", "parent": f"store:{STORE}", "day": day,
                                                            "metric": "new_customers"}).json()
        say("   new customers ranked in the store: " + ", ".join(
            f"{item['rank']}. {item['name']} {item['value']}" for item in ranking["items"]))
        self.check([i["value"] for i in ranking["items"]] == sorted(
            [i["value"] for i in ranking["items"]], reverse=True) and sum(i["value"] for i in ranking["items"]) ==
            totals[0], "the store's ranking adds up to its staff's figures, highest first")


def _count(report: dict, key: str) -> int:
    value = report.get(key, 0)
    return len(value) if isinstance(value, list) else int(value)


def _summary(job: dict) -> str:
    """What a corp's reconciliation job checked and repaired."""
    report = job.get("result") or {}
    if job.get("state") != "done":
        return f"{job.get('state')} ({job.get('error')})"
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.get("by_kind", {}).items())) or "nothing"
    return f"{report.get('checked', 0)} follows checked, repaired: {kinds}"


def quiet_output(logs: Path) -> None:
    """Only the story on the terminal: the stack's own log and Python's warnings go to
    `logs`/stack.log (the functions write theirs under `logs`/<FunctionId>/), and this
    process's own use of the scrm package logs only warnings."""
    logs.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, filename=logs / "stack.log", filemode="w",
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.captureWarnings(True)
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"


def main() -> int:
    os.environ.setdefault("SCRM_HTTP_PORT", "0")  # never clash with a running `make up`
    os.environ.setdefault("SCRM_SIM_PORT", "0")
    quiet_output(LOGS)
    from infra.local.stack import LocalStack

    say("Starting the local stack (moto, each function in processes of its own, gateway, pollers, WeCom simulator) ...")
    started = time.time()
    with LocalStack(logs=LOGS) as stack:
        say(f"   up in {time.time() - started:.1f} s; gateway {stack.gateway_url}, corp {stack.corps[0].corp_id}")
        demo = Demo(stack)
        for part in (demo.org, demo.offer, demo.codes, demo.morning, demo.till, demo.churn, demo.night, demo.table):
            part()
    say()
    if demo.problems:
        say(f"{len(demo.problems)} check(s) failed: " + "; ".join(demo.problems))
        say(f"The functions' logs are in {LOGS.relative_to(ROOT)}/<FunctionId>/, one file per instance.")
        return 1
    say(f"The functions' logs are in {LOGS.relative_to(ROOT)}/<FunctionId>/, one file per instance.")
    say("All checks held. `make up` runs the same stack in the foreground; see README.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
