"""Forms (Flask-WTF): fields, CSRF and the messages readers see."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from gate import accounts


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
    newsletter = BooleanField("Send me The Meridian Weekly, our free newsletter", default=True)


class LoginForm(_EmailForm):
    """Log in with a password."""

    password = PasswordField("Password", validators=[DataRequired("Enter your password.")])
    remember = BooleanField("Keep me signed in on this device")


class MagicLinkForm(_EmailForm):
    """Ask for a one-time sign-in link by email."""


class ConfirmForm(FlaskForm):
    """A bare POST button (sign in with a link, unlock): CSRF only."""
