"""Forms (Flask-WTF): fields, CSRF and the messages readers see."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from gate import accounts, billing


class _EmailForm(FlaskForm):
    """Any form that takes an email address; ``email`` is normalised on success."""

    email = EmailField("Email address", validators=[DataRequired("Enter your email address.")])
    next = HiddenField()

    def validate_email(self, field) -> None:
        """Validate with email-validator and keep the normalised address."""
        try:
            field.data = accounts.normalize_email(field.data)
        except accounts.AccountError as error:
            raise ValidationError(str(error)) from None


class SignupForm(_EmailForm):
    """Create an account with an email and, optionally, a password."""

    password = PasswordField(
        "Password (optional)",
        validators=[Optional(), Length(min=accounts.MIN_PASSWORD,
                                       message=f"Passwords need at least {accounts.MIN_PASSWORD} characters.")],
    )


def list_field(list_id: str) -> str:
    """The form field name of a newsletter's consent checkbox."""
    return "list_" + list_id.replace("-", "_")


def signup_form(lists, ticked=lambda item: item.consent_default == "ticked") -> type[SignupForm]:
    """A signup form with one consent checkbox per list that signup offers, unticked unless
    ``ticked(list)`` says otherwise (opt-in: consent must be an affirmative act)."""
    fields = {list_field(item.id): BooleanField(item.consent_wording, default=ticked(item))
              for item in lists}
    return type("SignupWithLists", (SignupForm,), fields)


class LoginForm(_EmailForm):
    """Log in with a password."""

    password = PasswordField("Password", validators=[DataRequired("Enter your password.")])
    remember = BooleanField("Keep me signed in on this device")


class MagicLinkForm(_EmailForm):
    """Ask for a one-time sign-in link by email."""


class ConfirmForm(FlaskForm):
    """A bare POST button (sign in with a link, unlock): CSRF only."""


class CardForm(FlaskForm):
    """Card details, checked like a payment provider's test mode (see gate.billing)."""

    name = StringField("Name on card", validators=[DataRequired("Enter the name on the card."),
                                                   Length(max=120)])
    card_number = StringField("Card number", validators=[DataRequired("Enter the card number.")])
    expiry = StringField("Expiry (MM/YY)", validators=[DataRequired("Enter the expiry date.")])
    cvc = StringField("Security code (CVC)", validators=[DataRequired("Enter the security code.")])
    idempotency_key = HiddenField()

    def check_card(self, now):
        """Validate the card fields against the test cards; returns a Card or None."""
        card, errors = billing.validate_card(self.card_number.data, self.expiry.data,
                                             self.cvc.data, now)
        for name, message in errors.items():
            getattr(self, name).errors = [*getattr(self, name).errors, message]
        return card


class CheckoutForm(CardForm):
    """Checkout; anonymous visitors also give an email (and optional password)."""

    email = EmailField("Email address", validators=[Optional()])
    password = PasswordField("Password (optional)", validators=[
        Optional(), Length(min=accounts.MIN_PASSWORD,
                           message=f"Passwords need at least {accounts.MIN_PASSWORD} characters.")])


class SearchForm(FlaskForm):
    """The archive search box (GET, so no CSRF)."""

    class Meta:
        csrf = False

    q = StringField("Search the archive", validators=[Length(max=200)])
