"""The reader's account: meter, unlocked articles, subscription and payments."""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.rules import billing, paywall
from gate.services import content, subscriptions
from gate.web.forms import CardForm, ConfirmForm

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
        form=ConfirmForm(),
    )


@bp.app_context_processor
def _billing_alert():
    """A past-due reader sees on every page until when they keep access, and how to fix it."""
    user = current_user._get_current_object()
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


@bp.post("/account/subscription/resume")
@login_required
def resume():
    """Keep a subscription that was set to end at the period end."""
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("account.account"), code=303)
    return _run(lambda: subscriptions.resume(get_db(), site.config(), current_user.id, current().now),
                "Your subscription will renew as usual.")


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
