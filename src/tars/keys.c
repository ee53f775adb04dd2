#include "keys.h"

#include <X11/Xlib.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
  const char *name, *keysym;
} key_alias;

static const key_alias ALIASES[] = {
    {"ctrl", "Control_L"}, {"ctrlleft", "Control_L"}, {"control", "Control_L"}, {"ctrlright", "Control_R"},
    {"shift", "Shift_L"}, {"shiftleft", "Shift_L"}, {"shiftright", "Shift_R"},
    {"alt", "Alt_L"}, {"altleft", "Alt_L"}, {"altright", "Alt_R"}, {"option", "Alt_L"},
    {"win", "Super_L"}, {"winleft", "Super_L"}, {"winright", "Super_R"}, {"super", "Super_L"},
    {"meta", "Super_L"}, {"cmd", "Super_L"}, {"command", "Super_L"},
    {"enter", "Return"}, {"return", "Return"}, {"\n", "Return"}, {"\r", "Return"},
    {"esc", "Escape"}, {"escape", "Escape"},
    {"tab", "Tab"}, {"\t", "Tab"}, {"backspace", "BackSpace"}, {"\b", "BackSpace"},
    {"delete", "Delete"}, {"del", "Delete"}, {"insert", "Insert"},
    {"space", "space"}, {" ", "space"},
    {"up", "Up"}, {"down", "Down"}, {"left", "Left"}, {"right", "Right"},
    {"arrowup", "Up"}, {"arrowdown", "Down"}, {"arrowleft", "Left"}, {"arrowright", "Right"},
    {"home", "Home"}, {"end", "End"},
    {"pageup", "Page_Up"}, {"pgup", "Page_Up"}, {"page up", "Page_Up"},
    {"pagedown", "Page_Down"}, {"pgdn", "Page_Down"}, {"page down", "Page_Down"},
    {"capslock", "Caps_Lock"}, {"numlock", "Num_Lock"}, {"scrolllock", "Scroll_Lock"},
    {"printscreen", "Print"}, {"prtsc", "Print"}, {"prtscr", "Print"}, {"prntscrn", "Print"}, {"print", "Print"},
    {"pause", "Pause"}, {"apps", "Menu"}, {"menu", "Menu"}, {"help", "Help"}, {"select", "Select"},
    {"execute", "Execute"},
    {"num0", "KP_0"}, {"num1", "KP_1"}, {"num2", "KP_2"}, {"num3", "KP_3"}, {"num4", "KP_4"},
    {"num5", "KP_5"}, {"num6", "KP_6"}, {"num7", "KP_7"}, {"num8", "KP_8"}, {"num9", "KP_9"},
    {"add", "KP_Add"}, {"subtract", "KP_Subtract"}, {"multiply", "KP_Multiply"}, {"divide", "KP_Divide"},
    {"decimal", "KP_Decimal"}, {"separator", "KP_Separator"},
    {"browserback", "XF86Back"}, {"browserforward", "XF86Forward"}, {"browserrefresh", "XF86Refresh"},
    {"browserstop", "XF86Stop"}, {"browsersearch", "XF86Search"}, {"browserfavorites", "XF86Favorites"},
    {"browserhome", "XF86HomePage"}, {"volumemute", "XF86AudioMute"}, {"volumedown", "XF86AudioLowerVolume"},
    {"volumeup", "XF86AudioRaiseVolume"}, {"nexttrack", "XF86AudioNext"}, {"prevtrack", "XF86AudioPrev"},
    {"playpause", "XF86AudioPlay"}, {"stop", "XF86AudioStop"},
    {"!", "exclam"}, {"#", "numbersign"}, {"%", "percent"}, {"$", "dollar"}, {"&", "ampersand"},
    {"\"", "quotedbl"}, {"'", "apostrophe"}, {"(", "parenleft"}, {")", "parenright"}, {"*", "asterisk"},
    {"=", "equal"}, {"+", "plus"}, {",", "comma"}, {"-", "minus"}, {".", "period"}, {"/", "slash"},
    {":", "colon"}, {";", "semicolon"}, {"<", "less"}, {">", "greater"}, {"?", "question"}, {"@", "at"},
    {"[", "bracketleft"}, {"]", "bracketright"}, {"\\", "backslash"}, {"^", "asciicircum"},
    {"_", "underscore"}, {"`", "grave"}, {"{", "braceleft"}, {"|", "bar"}, {"}", "braceright"},
    {"~", "asciitilde"},
};

static const char *const FKEYS[] = {"F1",  "F2",  "F3",  "F4",  "F5",  "F6",  "F7",  "F8",
                                    "F9",  "F10", "F11", "F12", "F13", "F14", "F15", "F16",
                                    "F17", "F18", "F19", "F20", "F21", "F22", "F23", "F24"};

static const char *const LETTERS[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m",
                                      "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z"};
static const char *const DIGITS[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

const char *tars_key_to_keysym_name(const char *name) {
  if (!name || !*name) return NULL;
  for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
    if (!strcasecmp(name, ALIASES[i].name)) return ALIASES[i].keysym;
  if (!name[1]) {
    int c = tolower((unsigned char)name[0]);
    if (c >= 'a' && c <= 'z') return LETTERS[c - 'a'];
    if (c >= '0' && c <= '9') return DIGITS[c - '0'];
  }
  if ((name[0] == 'f' || name[0] == 'F') && isdigit((unsigned char)name[1])) {
    int n = 0;
    if (sscanf(name + 1, "%d", &n) == 1 && n >= 1 && n <= 24) {
      char back[8];
      snprintf(back, sizeof back, "%d", n);
      if (!strcmp(back, name + 1)) return FKEYS[n - 1];
    }
  }
  /* A keysym name as Xlib spells it (needs no display connection). */
  if (XStringToKeysym(name) != NoSymbol) {
    const char *canon = XKeysymToString(XStringToKeysym(name));
    return canon;
  }
  return NULL;
}
