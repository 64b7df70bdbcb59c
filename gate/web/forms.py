"""Forms (Flask-WTF): fields, CSRF and the messages readers see."""

from __future__ import annotations

from flask import request
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, RadioField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from gate.rules import billing
from gate.services import accounts

#: The field error for a value sent as a file part (curl -F email=@file) or a JSON non-string.
NOT_TEXT = "Type this in: it must be text, not a file."
_FROM_REQUEST = object()


class TextForm(FlaskForm):
    """Every form's base: fields take text only, so a file part is a field error, never a 500.

    Flask-WTF merges ``request.files`` (and a JSON body's values) into the form data, where
    a file or a number reaches code that expects a string; here they are set aside instead.
    """

    def __init__(self, formdata=_FROM_REQUEST, **kwargs) -> None:
        self.not_text: set[str] = set()
        if formdata is _FROM_REQUEST:
            formdata = self._submitted_text() if self.is_submitted() else None
        super().__init__(formdata=formdata, **kwargs)

    def _submitted_text(self) -> MultiDict | None:
        """The submission's text values (form fields or a JSON object); other names are noted."""
        if request.is_json:
            body = request.get_json(silent=True)
            pairs = list(body.items()) if isinstance(body, dict) else []
        else:
            pairs = [*request.form.items(multi=True), *request.files.items(multi=True)]
        text = MultiDict((name, value) for name, value in pairs if isinstance(value, str))
        self.not_text = {name for name, value in pairs if not isinstance(value, str)}
        return text if pairs else None

    def validate(self, extra_validators=None) -> bool:
        """Validate as usual, and refuse every field that arrived as something other than text."""
        valid = super().validate(extra_validators)
        refused = self.not_text & self._fields.keys()
        for name in refused:
            self[name].errors = [NOT_TEXT]
        return valid and not refused


def _as_field_error(check):
    """A WTForms validator from a domain check that raises AccountError."""
    def validator(form, field) -> None:
        try:
            check(field)
        except accounts.AccountError as error:
            raise ValidationError(str(error)) from None
    return validator


def password_field(label: str, *, new: bool, required: bool = False) -> PasswordField:
    """A password field under the one rule (accounts.check_password) in signup, checkout and login."""
    first = [InputRequired("Enter your password.")] if required else []
    rule = _as_field_error(lambda field: accounts.check_password(field.data or "", new=new))
    return PasswordField(label, validators=[*first, rule])


class _EmailForm(TextForm):
    """Any form that takes an email address; ``email`` is normalised on success."""

    email = EmailField("Email address", validators=[DataRequired("Enter your email address.")])
    next = HiddenField()

    @_as_field_error
    def validate_email(field) -> None:
        """Validate with email-validator and keep the normalised address."""
        field.data = accounts.normalize_email(field.data)


class SignupForm(_EmailForm):
    """Create an account with an email and, optionally, a password."""

    password = password_field("Password (optional)", new=True)


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

    password = password_field("Password", new=False, required=True)
    remember = BooleanField("Keep me signed in on this device")


class MagicLinkForm(_EmailForm):
    """Ask for a one-time sign-in link by email."""


class ConfirmForm(TextForm):
    """A bare POST button (sign in with a link, unlock): CSRF only."""


class CardForm(TextForm):
    """Card details, checked like a payment provider's test mode (see gate.rules.billing)."""

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
    password = password_field("Password (optional)", new=True)
    #: The promo code applied above the form (see CodeForm), carried to the payment.
    code = HiddenField(validators=[Length(max=40)])


class CodeForm(TextForm):
    """A promo code at checkout: applying it (GET) re-renders the checkout with its price, no card asked."""

    class Meta:
        csrf = False

    code = StringField("Promo code", validators=[Length(max=40, message="A code is at most 40 characters.")])


class SearchForm(TextForm):
    """The archive search box (GET, so no CSRF)."""

    class Meta:
        csrf = False

    q = StringField("Search the archive", validators=[Length(max=200)])


def _one_of(label: str, missing: str, unknown: str) -> RadioField:
    """A required radio group whose choices come from the site config (set per request); a forged
    value is a field error, never a default."""

    def listed(form, field) -> None:
        if field.data not in {value for value, _ in field.choices}:
            raise ValidationError(unknown)

    return RadioField(label, validate_choice=False, validators=[InputRequired(missing), listed])


class ReasonForm(TextForm):
    """Why a reader cancels: one of ``[retention.reasons]``."""

    reason = _one_of("Why are you cancelling?", "Choose a reason to go on.", "Choose one of the reasons listed.")


class PauseForm(TextForm):
    """How long a save offer's pause lasts: one of the months it offers."""

    months = _one_of("How long would you like to pause?", "Choose how long to pause.",
                     "Choose one of the lengths listed.")
