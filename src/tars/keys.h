/* Key names emitted by UI-TARS models -> X keysym names. */
#ifndef TARS_KEYS_H
#define TARS_KEYS_H

/* Maps one key name from a hotkey/press/release action to the X keysym name (e.g. "ctrl" ->
 * "Control_L", "arrowdown" -> "Down", "a" -> "a", "!" -> "exclam"). Lookup is case-insensitive for the
 * names of the table; a name the table lacks is accepted when Xlib's XStringToKeysym knows it as written
 * (e.g. "XF86AudioMute"). Returns a static string, or NULL for an unknown name.
 * Source: pyautogui's X11 keyboardMapping and UI-TARS-desktop's key aliases (reference/uitars.md 2.6). */
const char *tars_key_to_keysym_name(const char *name);

#endif
