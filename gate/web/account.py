"""The reader's account: meter, unlocked articles, subscription and payments."""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, logout_user

from gate.app import context, site
from gate.app.context import current
from gate.app.db import get_db
from gate.rules import billing, paywall
from gate.services import content, devices, retention, subscriptions
from gate.web.forms import CardForm, ConfirmForm, PauseForm, ReasonForm

bp = Blueprint("account", __name__)


@bp.get("/account")
@login_required
def account():
    """Show who the reader is, their meter, subscription and payments."""
    rules, now = current().rules, current().now
    # Every unlock the reader ever made, whether or not their tier counts a meter now.
    viewer = replace(current().viewer, spends=current().quota.spends(current().viewer.meter_key))
    articles = content.by_slugs(get_db(), sorted({s.slug for s in viewer.spends}))
    history = [
        {"spend": s, "article": articles[s.slug],
         "readable": paywall.decide(rules, viewer, articles[s.slug], now).access == "full"}
        for s in reversed(viewer.spends) if s.slug in articles
    ]
    db = get_db()
    sub = subscriptions.current(db, current_user.id)
    plan = next((p for p in site.config().plans if sub and p.id == sub.plan_id), None)
    return render_template(
        "account/account.html", reader=current_user, history=history, sub=sub, plan=plan, payments=subscriptions.payments(db, current_user.id),
        grace_ends=subscriptions.grace_end(site.config(), sub),
        form=ConfirmForm(), devices=devices.listing(db, current_user),
        device_limit=devices.limit_for(db, site.config(), rules, current_user, now),
    )


@bp.app_context_processor
def _billing_alert():
    """A past-due reader sees on every page until when they keep access, and how to fix it."""
    user = context.account()
    if not user.is_authenticated:
        return {"billing_alert": None}
    ends = user.grace_ends  # worked out with the reader's access when the session loaded it
    return {"billing_alert": {"grace_ends": ends, "over": ends <= current().now} if ends else None}


def _run(operation, success: str):
    """Apply a subscription change, flash the result, go back to the account."""
    try:
        operation()
    except billing.BillingError as error:
        flash(f"That can't be done: {error}.", "warning")
    else:
        flash(success, "success")
    return redirect(url_for("account.account"), code=303)


@bp.get("/account/subscription/cancel")
@login_required
def confirm_cancel():
    """Ask before ending a subscription right away: access stops at once, with no refund."""
    sub = subscriptions.current(get_db(), current_user.id)
    if sub is None or sub.status not in billing.LIVE:
        flash("You have no active subscription to cancel.", "info")
        return redirect(url_for("account.account"))
    plan = next((p for p in site.config().plans if p.id == sub.plan_id), None)
    return render_template("account/cancel_confirm.html", sub=sub, plan=plan, form=ConfirmForm())


@bp.post("/account/subscription/cancel")
@login_required
def cancel():
    """Cancel at the period end (the default) or, with when=now and confirm=yes, immediately."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("account.account"), code=303)
    now_please = request.form.get("when") == "now"
    if now_please and request.form.get("confirm") != "yes":  # one click must not end access
        return redirect(url_for("account.confirm_cancel"), code=303)
    return _run(
        lambda: subscriptions.cancel(get_db(), site.config(), current_user.id, current().now,
                                     immediately=now_please),
        "Your subscription has ended." if now_please else
        "Your subscription will end at the close of this period. You can resume it until then.",
    )


def _button(operation, success: str):
    """A bare POST button on the account page: CSRF checked, then ``operation(db, cfg, reader, now)``."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("account.account"), code=303)
    return _run(lambda: operation(get_db(), site.config(), current_user.id, current().now), success)


def _reason_form() -> ReasonForm:
    """The cancel form's reasons, as config/site.toml lists them."""
    form = ReasonForm()
    form.reason.choices = list(site.config().retention.reasons.items())
    return form


def _pause_form(offer) -> PauseForm:
    """The pause lengths a save offer gives, each with the day it would resume."""
    form, now, tz = PauseForm(), current().now, current().rules.tz
    back = {m: billing.add_months(now, m).astimezone(tz) for m in offer.pause_months}
    form.months.choices = [(str(m), f"{m} month{'s' * (m > 1)}, back on {day.strftime('%B %-d, %Y')}")
                           for m, day in back.items()]
    return form


def _renewing_sub():
    """The reader's subscription if it can be cancelled through the reasons (renews, not ending)."""
    sub = subscriptions.current(get_db(), current_user.id)
    ok = sub is not None and sub.status in billing.PAID_UP and not sub.cancel_at_period_end
    return sub if ok else None


def _save_page(sub, offer, pause_form=None, status=200):
    """The save offer answering the reader's reason, with accept and decline."""
    cfg = site.config()
    plan = next((p for p in cfg.plans if p.id == sub.plan_id), None)
    return render_template("account/cancel_save.html", sub=sub, plan=plan, offer=offer,
                           words=retention.words(offer, cfg, sub), form=ConfirmForm(),
                           pause_form=pause_form or _pause_form(offer)), status


@bp.route("/account/subscription/reason", methods=["GET", "POST"])
@login_required
def cancel_reason():
    """Ask why before cancelling at the period end; a save offer may answer the reason."""
    sub = _renewing_sub()
    if sub is None:
        flash("You have no renewing subscription to cancel.", "info")
        return redirect(url_for("account.account"), code=303)
    form = _reason_form()
    if form.validate_on_submit():
        try:
            offer = retention.ask(get_db(), site.config(), current_user.id, form.reason.data, current().now)
        except billing.BillingError as error:
            flash(f"That can't be done: {error}.", "warning")
            return redirect(url_for("account.account"), code=303)
        if offer is not None:
            return _save_page(subscriptions.current(get_db(), current_user.id), offer)
        flash("Your subscription will end at the close of this period. You can resume it until then.", "success")
        return redirect(url_for("account.account"), code=303)
    plan = next((p for p in site.config().plans if p.id == sub.plan_id), None)
    status = 400 if request.method == "POST" else 200
    return render_template("account/cancel_reason.html", sub=sub, plan=plan, form=form), status


@bp.post("/account/subscription/save")
@login_required
def save_accept():
    """Accept the save offer shown: a discount at once, or a pause of the months chosen."""
    sub = _renewing_sub()
    offer = retention.configured(site.config(), sub.cancel_reason if sub else None)
    if sub is None or offer is None:
        flash("There is no save offer to accept.", "warning")
        return redirect(url_for("account.account"), code=303)
    months = None
    if offer.kind == "pause":
        form = _pause_form(offer)
        if not form.validate_on_submit():
            return _save_page(sub, offer, form, 400)
        months = int(form.months.data)
    elif not ConfirmForm().validate_on_submit():
        return redirect(url_for("account.account"), code=303)
    done = ("Your subscription is paused. Welcome back whenever you like." if months else
            f"Done: {retention.words(offer, site.config(), sub)}. Your subscription continues.")
    return _run(lambda: retention.accept(get_db(), site.config(), current_user.id, current().now, months), done)


@bp.post("/account/subscription/save/decline")
@login_required
def save_decline():
    """Turn the save offer down: cancel at the period end as asked."""
    return _button(retention.decline, "Your subscription will end at the close of this period. "
                   "You can resume it until then.")


@bp.post("/account/subscription/unpause")
@login_required
def unpause():
    """End a pause early: access comes back now and a new period is charged."""
    return _button(subscriptions.unpause, "Welcome back: your subscription is active again.")


@bp.post("/account/subscription/resume")
@login_required
def resume():
    """Keep a subscription that was set to end at the period end."""
    return _button(subscriptions.resume, "Your subscription will renew as usual.")


@bp.route("/account/card", methods=["GET", "POST"])
@login_required
def card():
    """Update the card on file; a past-due renewal is retried with it at once."""
    form = CardForm()
    sub = subscriptions.current(get_db(), current_user.id)
    if sub is None or sub.status not in billing.LIVE:
        flash("You have no active subscription to update.", "info")
        return redirect(url_for("account.account"))
    if form.validate_on_submit():
        new_card = form.check_card(current().now)
        if new_card:
            try:
                updated = subscriptions.update_card(get_db(), site.config(), current_user.id,
                                                    new_card, form.card_number.data, current().now)
            except billing.BillingError as error:
                form.card_number.errors.append(str(error))
            else:
                if updated.status == "past_due":
                    form.card_number.errors.append("The payment with this card failed too.")
                else:
                    flash(f"Card ending {new_card.last4} is now on file.", "success")
                    return redirect(url_for("account.account"), code=303)
    status = 400 if request.method == "POST" else 200
    return render_template("account/card.html", form=form, sub=sub, test_cards=billing.TEST_CARDS), status


@bp.post("/account/devices/<int:device_id>/sign-out")
@login_required
def sign_out_device(device_id: int):
    """Sign one of the reader's other devices out (this one signs out through /logout)."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("account.account"), code=303)
    if devices.sign_out_device(get_db(), current_user, device_id, current().now):
        flash("That device is signed out. It will need your password or an emailed link to come back.", "success")
    else:
        flash("That device is not signed in to your account (or it is this one).", "warning")
    return redirect(url_for("account.account") + "#acct-devices", code=303)


@bp.post("/account/devices/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    """Sign every device out, this one too."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("account.account"), code=303)
    count = devices.sign_out_everywhere(get_db(), current_user, current().now)
    logout_user()
    session.clear()
    flash(f"You are signed out on every device ({count}).", "info")
    return redirect(url_for("auth.login"), code=303)
